using System.Globalization;
using System.Text.Json.Nodes;
using Serving.AdapterStore.Peft;
using Serving.AdapterStore;
using Serving.Inference.Chat;
using Serving.Inference.Engine;
using Serving.Inference.Graphs;
using Serving.Inference.Runtime;
using Serving.Inference.Tokenization;

namespace Serving.AdapterQuality;

/// <summary>
/// What quantised weights keep (issue 17): for each weight configuration, the general test split's loss and perplexity,
/// each demo adapter's own-domain test loss with the adapter (fp32, uncompressed) on top of the quantised base, and
/// greedy agreement with fp32 over held-out chat prompts (position-wise share of equal tokens, share of identical
/// continuations, mean first divergence).
/// </summary>
internal static class FormatQuality
{
    public sealed record Config(string Label, WeightFormat Format, int AccuracyLevel, bool QuantizeHead, int BlockSize);

    public static void Run(string root, IReadOnlyList<Config> configs, IReadOnlyList<string> adapters, int prompts, int tokens, int generalEvery, int threads)
    {
        var inv = CultureInfo.InvariantCulture;
        var tokenizerModel = DecoderModel.Load(root, new RuntimeOptions { MaxBatch = 1, MaxContext = 16, Threads = threads });
        var tokenizer = TokenizerLoader.Load(root, tokenizerModel.Config.VocabSize);
        var shape = BaseModelShape.FromConfig(tokenizerModel.Config);
        tokenizerModel.Dispose();
        var general = EvalSplit.Load(Path.Combine(root, "eval", "general.test.jsonl"), tokenizer, generalEvery);
        var own = adapters.ToDictionary(a => a, a => EvalSplit.Load(Path.Combine(root, "eval", $"{a}.test.jsonl"), tokenizer));
        var loras = adapters.ToDictionary(a => a, a =>
        {
            var dir = Path.Combine(root, "adapters", a);
            var payload = PeftAdapterReader.Read(File.ReadAllBytes(Path.Combine(dir, "adapter_config.json")),
                File.ReadAllBytes(Path.Combine(dir, "adapter_model.safetensors")), shape).Payload;
            return AdapterMaterializer.Materialize(payload);
        });
        var promptIds = Prompts(root, tokenizer, prompts);
        Console.WriteLine($"# general: every {generalEvery}th test document ({general.Tokens} tokens); adapters: {string.Join(", ", adapters)} (own test splits); " +
            $"{promptIds.Count} held-out chat prompts × {tokens} greedy tokens; {threads} threads");

        List<int[]>? reference = null;
        double? referenceGeneral = null;
        Dictionary<string, double>? referenceOwn = null;
        Console.WriteLine("| weights | bytes (projections + head) | general loss | perplexity | Δ ppl vs fp32 | adapters' own loss (mean) | Δ vs fp32 | greedy agreement | identical | first divergence |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|");
        foreach (var config in configs)
        {
            using var model = DecoderModel.Load(root, new RuntimeOptions
            {
                MaxBatch = 8, MaxContext = LossEvaluator.Window + 8 + tokens, AdapterSlots = 1, AdapterMaxRank = 64, Threads = threads,
                Weights = config.Format, WeightAccuracyLevel = config.AccuracyLevel, QuantizeHead = config.QuantizeHead, WeightBlockSize = config.BlockSize,
            });
            using var decoder = new BatchDecoder(model);
            var evaluator = new LossEvaluator(decoder);
            var generalLoss = evaluator.Loss(general, adapted: false);
            var ownLoss = new Dictionary<string, double>();
            foreach (var a in adapters)
            {
                evaluator.Load(loras[a]);
                ownLoss[a] = evaluator.Loss(own[a], adapted: true);
            }
            var outputs = Greedy(decoder, promptIds, tokens);
            reference ??= outputs;
            referenceGeneral ??= generalLoss;
            referenceOwn ??= ownLoss;
            long same = 0, total = 0, identical = 0;
            double divergence = 0;
            for (var i = 0; i < outputs.Count; i++)
            {
                var first = tokens;
                for (var t = 0; t < tokens; t++)
                {
                    if (outputs[i][t] == reference[i][t]) same++;
                    else if (first == tokens) first = t;
                    total++;
                }
                if (first == tokens) identical++;
                divergence += first;
            }
            var meanOwn = ownLoss.Values.Average();
            var ownDelta = adapters.Average(a => ownLoss[a] / referenceOwn[a] - 1);
            var ppl = Math.Exp(generalLoss);
            static string Signed(double x) => (x < 0 ? "−" : "+") + Math.Abs(x).ToString("0.00%", CultureInfo.InvariantCulture);
            Console.WriteLine(string.Create(inv, $"| {config.Label} | {(model.ProjectionWeightBytes + model.HeadWeightBytes) / 1e6:F2} MB | {generalLoss:F4} | {ppl:F2} | " +
                $"{Signed(ppl / Math.Exp(referenceGeneral.Value) - 1)} | {meanOwn:F4} | {Signed(ownDelta)} (worst {Signed(adapters.Max(a => ownLoss[a] / referenceOwn[a] - 1))}) | " +
                $"{(double)same / total:P1} | {(double)identical / outputs.Count:P1} | {divergence / outputs.Count:F1} |"));
        }
    }

    private static List<int[]> Prompts(string root, ITokenizer tokenizer, int count)
    {
        var template = ChatTemplate.FromCheckpoint(root, out _);
        return File.ReadLines(Path.Combine(root, "eval", "prompts.test.jsonl")).Take(count)
            .Select(l => JsonNode.Parse(l)!["messages"]![0]!["content"]!.GetValue<string>())
            .Select(u => tokenizer.Encode(template.Render([new ChatMessage("user", u)], true, "<|endoftext|>", "<|endoftext|>"))).ToList();
    }

    /// <summary>Greedy continuations of every prompt (EOS ignored: a fixed length to compare), eight rows at a time.</summary>
    private static List<int[]> Greedy(BatchDecoder decoder, List<int[]> prompts, int tokens)
    {
        var v = decoder.Model.Config.VocabSize;
        var result = new List<int[]>();
        for (var start = 0; start < prompts.Count; start += decoder.Capacity)
        {
            var group = prompts.Skip(start).Take(decoder.Capacity).ToList();
            var outputs = group.Select(_ => new int[tokens]).ToArray();
            var seqs = new List<Sequence>();
            for (var i = 0; i < group.Count; i++)
            {
                var seq = decoder.TryAllocate()!;
                outputs[i][0] = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(decoder.Prefill(seq, group[i]));
                seq.PendingToken = outputs[i][0];
                seqs.Add(seq);
            }
            for (var t = 1; t < tokens; t++)
            {
                var logits = decoder.Decode();
                for (var r = 0; r < decoder.Active.Count; r++)
                {
                    var i = seqs.IndexOf(decoder.Active[r]);
                    var next = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits.Slice(r * v, v));
                    outputs[i][t] = next;
                    decoder.Active[r].PendingToken = next;
                }
            }
            foreach (var s in seqs) decoder.Release(s);
            result.AddRange(outputs);
        }
        return result;
    }
}
