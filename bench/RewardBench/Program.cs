using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Serving.Bench;
using Serving.Checkpoints;
using Serving.Checkpoints.RewardHeads;
using Serving.Fixtures;
using Serving.Inference.Chat;
using Serving.Inference.Decoding;
using Serving.Inference.Engine;
using Serving.Inference.Rewards;
using Serving.Inference.Runtime;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;
using Serving.Inference.Tokenization;

// Reward heads and decoding-time alignment (issue #12), in process on the engine and the real scheduler:
//  cost:     a decode step with vs without a reward head on every row (batch 1 / 8 / 32), demo model (its trained
//            head) and a gpt2-small-shaped fixture (a random head on the last layer), alternating A/B per repetition;
//  separate: scoring n = 8 candidates of 64 tokens by the in-pass head vs re-encoding each finished candidate with a
//            separate reward model of the base's size (a full prefill of prompt + candidate with the head);
//  quality:  held-out chat prompts (models/demo/eval/prompts.test.jsonl): plain sampling, best-of-n, ARGS, DARWIN;
//            mean reward as P(positive) of the answer scored as the head was trained (<|endoftext|> + answer), mean
//            per-token log-likelihood of the answer under the base model, generated tokens, 95% confidence intervals,
//            paired differences to plain sampling.
//            --clock cpu times the cost section by the decoding thread's CPU time instead of the wall clock (with
//            --threads 1, so the whole step runs on that thread): on a machine shared with other work, CPU time does
//            not count the time the step waited for a core, which the wall clock does.
//            --otter DIR prices another Otter side network on the demo model (default models/demo/otter), e.g. a
//            candidate shape before training it: the cost does not depend on the weights' values.
// usage: RewardBench [--only cost,separate,quality] [--models demo,gpt2-small,llama-small] [--batches 1,8,32] [--steps 32] [--reps 5] [--threads N] [--clock wall|cpu] [--otter DIR]
//                    [--prompts 200] [--tokens 48] [--interval 16] [--md docs/benchmarks.md] [--json bench/results/reward.json]
var opts = BenchArgs.Parse(args);
var inv = CultureInfo.InvariantCulture;
var threads = opts.Int("threads", Environment.ProcessorCount);
OrtRuntime.EnsureInitialized(threads);
var only = opts.List("only", "cost,separate,quality");
var cpuClock = opts.Str("clock", "wall") switch
{
    "wall" => false,
    "cpu" when threads == 1 => true,
    "cpu" => throw new ArgumentException("--clock cpu needs --threads 1 (pool threads' time would not be counted)"),
    var other => throw new ArgumentException($"--clock {other}: expected wall or cpu"),
};
var repo = BenchMachine.Repo();
var demo = Path.Combine(repo, "models", "demo");
var command = "dotnet run -c Release --project bench/RewardBench -- " + string.Join(' ', args);
var md = new StringBuilder();
var json = new JsonObject { ["command"] = command, ["machine"] = BenchMachine.Cpu(), ["threads"] = threads };
md.AppendLine(inv, $"### Reward heads and alignment ({DateTime.UtcNow:yyyy-MM-dd}): `{command}`");
md.AppendLine(inv, $"Machine: {BenchMachine.Cpu()}, {threads} threads, ONNX Runtime CPU.");
Console.WriteLine(md.ToString());

if (only.Contains("cost") || only.Contains("separate"))
{
    var gpt2 = Path.Combine(repo, ".fixtures", "gpt2-small");
    if (!File.Exists(Path.Combine(gpt2, "model.safetensors"))) FixtureCheckpoint.Write(gpt2, FixtureShape.Gpt2Small);
    var llama = Path.Combine(repo, ".fixtures", "llama-small");
    if (opts.List("models", "demo,gpt2-small,llama-small").Contains("llama-small") && !File.Exists(Path.Combine(llama, "model.safetensors")))
    {
        FixtureCheckpoint.Write(llama, FixtureShape.LlamaSmall);
    }
    foreach (var (name, dir) in new[] { ("demo", demo), ("gpt2-small", gpt2), ("llama-small", llama) })
    {
        if (!opts.List("models", "demo,gpt2-small,llama-small").Contains(name)) continue;
        var batches = opts.Ints("batches", "1,8,32");
        using var model = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = Math.Max(batches.Max(), 8), MaxContext = 256, Threads = threads });
        using var head = name == "demo"
            ? new RewardHead(RewardHeadReader.ReadFolder(Path.Combine(demo, "reward-head"), model.Config), model, "public/positive@1")
            : new RewardHead(RandomHead(model.Config, layer: model.Config.NumLayers), model, "random@1");
        if (only.Contains("cost")) json[$"cost_{name}"] = Cost(name, model, head, batches, opts.Int("steps", 32), opts.Int("reps", 5), cpuClock, md);
        if (only.Contains("separate")) json[$"separate_{name}"] = Separate(name, model, head, opts.Int("reps", 5), md);
        // The Otter form (a side network over every layer): the demo's trained one, and a random one of the demo's
        // proportions (side d/3, one head, d/4 neurons) on the larger fixtures.
        if (only.Contains("cost"))
        {
            var otterDir = name == "demo"
                ? Path.GetFullPath(opts.Str("otter", Path.Combine(demo, "otter")))
                : OtterFixture.Write(Path.Combine(repo, ".fixtures", name + "-otter"), model.Config, seed: 5,
                    side: model.Config.HiddenSize / 3, heads: 1, ffn: model.Config.HiddenSize / 4);
            using var otter = new RewardHead(OtterReader.ReadFolder(otterDir, model.Config), model, "otter@1");
            json[$"cost_{name}_otter"] = Cost(name + " (Otter form)", model, otter, batches, opts.Int("steps", 32), opts.Int("reps", 5), cpuClock, md);
        }
    }
}

if (only.Contains("quality"))
{
    json["quality"] = Quality(demo, opts.Int("prompts", 200), opts.Int("tokens", 48), opts.Int("interval", 16), threads,
        opts.List("methods", "").Where(m => m.Length > 0).ToArray(), opts.Int("skip", 0), md);
}

var jsonPath = opts.Str("json", Path.Combine("bench", "results", "reward.json"));
Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(jsonPath))!);
File.WriteAllText(jsonPath, json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
Console.WriteLine($"wrote {jsonPath}");
if (opts.Str("md", "") is { Length: > 0 } mdPath) BenchMachine.AppendMarkdown(mdPath, md.ToString());
return 0;

// ---------------------------------------------------------------------------------------------------------------------

static JsonArray Cost(string name, DecoderModel model, RewardHead head, int[] batches, int steps, int reps, bool cpuClock, StringBuilder md)
{
    const int warmup = 3; // untimed first: tier-1 JIT of the decode path's managed code and every step shape's bindings
    var inv = CultureInfo.InvariantCulture;
    var form = head.Side is { Definition: var side }
        ? $"side network: {side.Layers.Count} side layers on base layers {string.Join(',', side.Layers.Select(l => l.Layer))}, side {side.SideSize}, {side.NumHeads} head(s) of {side.HeadDim}, {side.IntermediateSize} neurons, {side.Parameters} parameters"
        : $"head: layer {head.Layer}, {head.Definition.Parameters} parameters";
    md.AppendLine(inv, $"\nHead cost, {name} ({form}; model {model.Config.NumLayers} layers, d {model.Config.HiddenSize}), {steps} decode steps per run, {reps} repetitions after a warm-up (the order with/without alternating){(cpuClock ? ", timed by the thread's CPU time" : "")}:\n");
    md.AppendLine(cpuClock
        ? "| batch | without head (tok per CPU-s) | with head (tok per CPU-s) | step CPU time with/without, median (min–max) |"
        : "| batch | without head (tok/s) | with head (tok/s) | step time with/without, median (min–max) |");
    md.AppendLine("|---|---|---|---|");
    var rows = new JsonArray();
    foreach (var b in batches)
    {
        using var dec = new BatchDecoder(model, b);
        var without = new List<double>();
        var with = new List<double>();
        // Two seconds of both before anything is timed: the first seconds of a process run slower (JIT tiers, the
        // thread pool, first touches of the weights), which would land on whichever configuration is measured first.
        var warm = Stopwatch.GetTimestamp();
        while (Stopwatch.GetElapsedTime(warm).TotalSeconds < 2)
        {
            DecodeRun(dec, b, steps, head, cpuClock);
            DecodeRun(dec, b, steps, null, cpuClock);
        }
        for (var r = -warmup; r < reps; r++)
        {
            // A/B then B/A on alternate repetitions, so neither side always runs first (caches, thread pool warmth).
            double t0, t1;
            if (r % 2 == 0)
            {
                t1 = DecodeRun(dec, b, steps, head, cpuClock);
                t0 = DecodeRun(dec, b, steps, null, cpuClock);
            }
            else
            {
                t0 = DecodeRun(dec, b, steps, null, cpuClock);
                t1 = DecodeRun(dec, b, steps, head, cpuClock);
            }
            if (r < 0) continue;
            without.Add(t0);
            with.Add(t1);
        }
        var line = string.Create(inv, $"| {b} | {b * steps / BenchStats.Median(without):F0} | {b * steps / BenchStats.Median(with):F0} | {BenchStats.Ratio(with, without)} |");
        md.AppendLine(line);
        Console.WriteLine(line);
        rows.Add(new JsonObject { ["batch"] = b, ["without_s"] = BenchStats.Median(without), ["with_s"] = BenchStats.Median(with), ["with_over_without"] = BenchStats.Median(with.Zip(without, (x, y) => x / y)) });
    }
    return rows;
}

/// <summary>Seconds (wall, or this thread's CPU) for <paramref name="steps"/> decode steps of <paramref name="b"/> rows (prompt of 16 tokens prefilled first, not timed).</summary>
static double DecodeRun(BatchDecoder dec, int b, int steps, RewardHead? head, bool cpuClock = false)
{
    var rng = new Random(7);
    var seqs = new Sequence[b];
    for (var i = 0; i < b; i++)
    {
        seqs[i] = dec.TryAllocate()!;
        if (head is not null) dec.SetRewardHead(seqs[i], head);
        dec.Prefill(seqs[i], Enumerable.Range(0, 16).Select(_ => rng.Next(4, 200)).ToArray());
    }
    var vocab = dec.Model.Config.VocabSize;
    var started = Stopwatch.GetTimestamp();
    var cpuStarted = cpuClock ? ThreadCpuSeconds() : 0;
    for (var s = 0; s < steps; s++)
    {
        foreach (var seq in seqs) seq.PendingToken = rng.Next(4, Math.Min(vocab, 4000));
        dec.Decode();
    }
    var seconds = cpuClock ? ThreadCpuSeconds() - cpuStarted : BenchMachine.Seconds(started);
    foreach (var seq in seqs) dec.Release(seq);
    return seconds;
}

static JsonObject Separate(string name, DecoderModel model, RewardHead head, int reps, StringBuilder md)
{
    const int n = 8, tokens = 64, prompt = 16, warmup = 3;
    var inv = CultureInfo.InvariantCulture;
    using var dec = new BatchDecoder(model, n);
    var inPassStep = new List<double>();
    var headOnly = new List<double>();
    var separate = new List<double>();
    var rng = new Random(3);
    var scratch = new float[head.ScratchSize];
    var hidden = new float[model.Config.HiddenSize];
    for (var i = 0; i < hidden.Length; i++) hidden[i] = (float)(rng.NextDouble() - 0.5);
    for (var r = -warmup; r < reps; r++)
    {
        // (a) what the head adds to generating the candidates: decode with minus decode without;
        var without = DecodeRun(dec, n, tokens, null);
        var with = DecodeRun(dec, n, tokens, head);
        // (b) the head's own work for n × tokens positions, timed alone;
        var started = Stopwatch.GetTimestamp();
        float sink = 0;
        for (var i = 0; i < n * tokens; i++) sink += head.Score(hidden, scratch);
        var own = BenchMachine.Seconds(started);
        // (c) the separate reward model: re-encode each finished candidate (prompt + 64 tokens) with a full pass.
        started = Stopwatch.GetTimestamp();
        for (var c = 0; c < n; c++)
        {
            var seq = dec.TryAllocate()!;
            dec.SetRewardHead(seq, head);
            dec.Prefill(seq, Enumerable.Range(0, prompt + tokens).Select(_ => rng.Next(4, 200)).ToArray());
            sink += seq.Reward;
            dec.Release(seq);
        }
        var sep = BenchMachine.Seconds(started);
        if (r < 0 || float.IsNaN(sink)) continue;
        inPassStep.Add(with - without);
        headOnly.Add(own);
        separate.Add(sep);
    }
    var step = BenchStats.Median(inPassStep);
    var own2 = BenchStats.Median(headOnly);
    var sepMedian = BenchStats.Median(separate);
    var line = string.Create(inv, $"| {name} | {sepMedian * 1e3:F2} | {own2 * 1e3:F3} | {step * 1e3:F2} | {sepMedian / own2:F0}× | {(step > 0 ? (sepMedian / step).ToString("F0", inv) + "×" : "n/a (within noise)")} |");
    md.AppendLine(inv, $"\nScoring n = {n} candidates of {tokens} tokens (prompt {prompt}), {name}: separate reward model (a full prefill of each candidate) vs the in-pass head (its own compute for the {n * tokens} positions; and the decode-time difference with/without head, median over {reps} repetitions):\n");
    md.AppendLine("| model | separate re-encode (ms) | in-pass head compute (ms) | in-pass decode difference (ms) | separate / head compute | separate / decode difference |");
    md.AppendLine("|---|---|---|---|---|---|");
    md.AppendLine(line);
    Console.WriteLine(line);
    return new JsonObject { ["separate_s"] = sepMedian, ["head_compute_s"] = own2, ["decode_difference_s"] = step };
}

static RewardHeadDefinition RandomHead(ModelConfig c, int layer)
{
    var rng = new Random(11);
    float[] Rand(int count, double scale) => Enumerable.Range(0, count).Select(_ => (float)((rng.NextDouble() * 2 - 1) * scale)).ToArray();
    const int width = 32;
    return new RewardHeadDefinition
    {
        Layer = layer,
        Input = RewardHeadInput.FinalNorm,
        Pooling = RewardPooling.Sum,
        Activation = RewardActivation.Tanh,
        Layers = [new DenseLayer(c.HiddenSize, width, Rand(width * c.HiddenSize, 0.05), Rand(width, 0.1)), new DenseLayer(width, 1, Rand(width, 0.3), Rand(1, 0.1))],
    };
}

// ---------------------------------------------------------------------------------------------------------------------

static JsonArray Quality(string demo, int promptCount, int maxTokens, int interval, int threads, string[] methodFilter, int skipPrompts, StringBuilder md)
{
    var inv = CultureInfo.InvariantCulture;
    using var model = DecoderModel.Load(demo, new RuntimeOptions { MaxBatch = 64, MaxContext = 256, Threads = threads });
    var tokenizer = TokenizerLoader.Load(demo, model.Config.VocabSize);
    var template = ChatTemplate.FromCheckpoint(demo, out _);
    var head = new RewardHead(RewardHeadReader.ReadFolder(Path.Combine(demo, "reward-head"), model.Config), model, "public/positive@1");
    var prompts = File.ReadLines(Path.Combine(demo, "eval", "prompts.test.jsonl")).Skip(skipPrompts).Take(promptCount)
        .Select(l => JsonNode.Parse(l)!["messages"]![0]!["content"]!.GetValue<string>()).ToList();
    int[] Render(string user) => tokenizer.Encode(template.Render([new ChatMessage("user", user)], true, "<|endoftext|>", "<|endoftext|>"));

    var methods = new List<(string Name, Func<string, DecodingSpec> Spec, bool Greedy)>
    {
        ("plain (T 0.7, top-k 40)", _ => SamplingSpec.Instance, false),
        ("best-of-4", _ => new BestOfNSpec(4), false),
        ("best-of-8", _ => new BestOfNSpec(8), false),
        ("ARGS k 10, w 0.5 (greedy)", _ => new ArgsSpec(10, 0.5f), true),
        ("ARGS k 10, w 1.5 (greedy)", _ => new ArgsSpec(10, 1.5f), true),
        ("ARGS k 10, w 3 (greedy)", _ => new ArgsSpec(10, 3f), true),
        ("greedy (ARGS w 0)", _ => new ArgsSpec(10, 0f), true),
    };
    foreach (var iterations in new[] { 1, 3 })
    {
        methods.Add(($"DARWIN 5 variants, m {interval}, {iterations} iteration{(iterations > 1 ? "s" : "")}", user => new DarwinSpec
        {
            Instruction = user,
            Variants = 5,
            Interval = interval,
            Iterations = iterations,
            RenderPrompt = Render,
            RenderMutation = text => Render("Rewrite the following instruction in other words, keeping its meaning:\n\n" + text),
        }, false));
    }

    using var scorer = new BatchDecoder(model, 1);
    var results = new Dictionary<string, (List<double> Reward, List<double> LogLik, List<double> Generated)>();
    var order = new List<string>();
    void RunMethod(string name, Func<string, DecodingSpec> spec, bool greedy)
    {
        var started = Stopwatch.GetTimestamp();
        using var dec = new BatchDecoder(model, 64);
        using var scheduler = new GenerationScheduler(dec, tokenizer, new SchedulerOptions { MaxQueue = 100_000 });
        var handles = new List<GenerationHandle>();
        for (var p = 0; p < prompts.Count; p++)
        {
            var request = new GenerationRequest
            {
                PromptTokens = Render(prompts[p]),
                Sampling = new SamplingParameters { Temperature = greedy ? 0f : 0.7f, TopK = greedy ? 0 : 40, Seed = (ulong)(1000 + skipPrompts + p), MaxTokens = maxTokens },
                RewardHead = head,
                ReturnTokenRewards = true, // an event for every token, so the answer's exact ids are known
                Decoding = spec(prompts[p]),
            };
            if (scheduler.Submit(request, out var h) != SubmitStatus.Accepted) throw new InvalidOperationException("not accepted");
            handles.Add(h!);
        }
        scheduler.Start();
        using var watchdog = new Timer(_ =>
        {
            var st = scheduler.Status;
            var open = Enumerable.Range(0, handles.Count).Where(i => !handles[i].Events.Completion.IsCompleted).Take(8);
            Console.Error.WriteLine($"  [{name}] waiting {st.Waiting}, running {st.RunningRequests} requests / {st.RunningRows} rows of {st.KvSlots}, steps {st.Steps}; open: {string.Join(',', open)}");
        }, null, TimeSpan.FromSeconds(15), TimeSpan.FromSeconds(15));
        var events = handles.Select(h => Task.Run(async () =>
        {
            var list = new List<GenerationEvent>();
            await foreach (var e in h.Events.ReadAllAsync()) list.Add(e);
            return list;
        })).Select(t => t.GetAwaiter().GetResult()).ToList();
        var rewards = new List<double>();
        var logLiks = new List<double>();
        var generated = new List<double>();
        for (var p = 0; p < prompts.Count; p++)
        {
            var answer = events[p].Where(e => e.Kind == GenerationEventKind.Token && e.Choice == 0 && e.TokenId >= 0).Select(e => e.TokenId).ToArray();
            var text = answer.Where(t => t > 3).ToArray();
            rewards.Add(Sigmoid(Score(scorer, head, [0, .. text])));
            logLiks.Add(LogLikelihood(scorer, Render(prompts[p]), answer));
            generated.Add(handles[p].GeneratedTokens);
        }
        results[name] = (rewards, logLiks, generated);
        order.Add(name);
        Console.WriteLine(string.Create(inv, $"{name}: reward {BenchStats.Ci(rewards)}, loglik {BenchStats.Ci(logLiks)}, generated {generated.Average():F0}/request, {BenchMachine.Seconds(started):F0} s"));
    }

    foreach (var (name, spec, greedy) in methods.Where(m => methodFilter.Length == 0 || methodFilter.Any(f => m.Name.Contains(f, StringComparison.OrdinalIgnoreCase))))
    {
        RunMethod(name, spec, greedy);
    }
    // Best-of-n at DARWIN's generated-token budget (the paper's comparison at equal compute).
    var darwin1 = results[order.First(n => n.StartsWith("DARWIN", StringComparison.Ordinal))].Generated.Average();
    var plainGenerated = results[order[0]].Generated.Average();
    var matched = Math.Max(2, (int)Math.Round(darwin1 / plainGenerated));
    RunMethod($"best-of-{matched} (DARWIN 1-iteration budget)", _ => new BestOfNSpec(matched), false);

    md.AppendLine(inv, $"\nQuality on {prompts.Count} held-out chat prompts (models/demo/eval/prompts.test.jsonl), at most {maxTokens} new tokens, head `public/positive` (demo reward head). Reward = P(positive) = sigmoid(head reward of `<|endoftext|>` + answer), as the head was trained; log-likelihood = mean log p(answer token | prompt, answer so far) under the base model; ± = 95% CI; Δ = paired difference to plain sampling (same prompt):\n");
    md.AppendLine("| method | reward P(positive) | Δ reward vs plain | log-likelihood / token | Δ log-lik vs plain | generated tokens / request |");
    md.AppendLine("|---|---|---|---|---|---|");
    var plain = results[order[0]];
    var rows = new JsonArray();
    foreach (var name in order)
    {
        var (r, l, g) = results[name];
        var dr = r.Zip(plain.Reward, (a, b) => a - b).ToList();
        var dl = l.Zip(plain.LogLik, (a, b) => a - b).ToList();
        var line = string.Create(inv, $"| {name} | {BenchStats.Ci(r)} | {(name == order[0] ? "—" : BenchStats.Ci(dr, "+0.000;-0.000"))} | {BenchStats.Ci(l)} | {(name == order[0] ? "—" : BenchStats.Ci(dl, "+0.000;-0.000"))} | {g.Average():F0} |");
        md.AppendLine(line);
        rows.Add(new JsonObject
        {
            ["method"] = name,
            ["reward_mean"] = r.Average(),
            ["reward_ci"] = BenchStats.MeanCi(r).HalfWidth,
            ["delta_reward_mean"] = dr.Average(),
            ["delta_reward_ci"] = BenchStats.MeanCi(dr).HalfWidth,
            ["loglik_mean"] = l.Average(),
            ["generated_mean"] = g.Average(),
        });
    }
    return rows;
}

static float Score(BatchDecoder scorer, RewardHead head, int[] ids)
{
    var seq = scorer.TryAllocate()!;
    scorer.SetRewardHead(seq, head);
    scorer.Prefill(seq, ids);
    var reward = seq.Reward;
    scorer.Release(seq);
    return reward;
}

static double Sigmoid(double x) => 1 / (1 + Math.Exp(-x));

/// <summary>Mean log p(answer[i] | prompt, answer[..i]) under the base model (a prefill with every position's logits).</summary>
static double LogLikelihood(BatchDecoder scorer, int[] prompt, int[] answer)
{
    if (answer.Length == 0) return 0;
    var ids = prompt.Concat(answer).ToArray();
    var vocab = scorer.Model.Config.VocabSize;
    var logits = new float[ids.Length * vocab];
    var seq = scorer.TryAllocate()!;
    scorer.Prefill(seq, ids, allLogits: logits);
    scorer.Release(seq);
    double total = 0;
    for (var i = 0; i < answer.Length; i++)
    {
        var row = logits.AsSpan((prompt.Length - 1 + i) * vocab, vocab);
        var max = System.Numerics.Tensors.TensorPrimitives.Max(row);
        double z = 0;
        foreach (var v in row) z += Math.Exp(v - max);
        total += row[answer[i]] - max - Math.Log(z);
    }
    return total / answer.Length;
}

/// <summary>CPU time of the calling thread (Linux <c>CLOCK_THREAD_CPUTIME_ID</c>), seconds.</summary>
static double ThreadCpuSeconds()
{
    if (clock_gettime(3, out var ts) != 0) throw new InvalidOperationException("clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    return ts.Seconds + ts.Nanoseconds * 1e-9;

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    static extern int clock_gettime(int clock, out TimeSpec value);
}

internal struct TimeSpec
{
    public long Seconds;
    public long Nanoseconds;
}
