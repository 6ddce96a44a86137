using System.Text;
using System.Text.Json.Nodes;
using Json.Schema;
using Serving.AdapterStore;
using Serving.AdapterStore.Compression;
using Serving.AdapterStore.Ingest;
using Serving.AdapterStore.Storage;
using Serving.Checkpoints;
using Serving.Inference.Adapters;
using Serving.Inference.Constraints;
using Serving.Inference.Decoding;
using Serving.Inference.Engine;
using Serving.Inference.Node.Adapters;
using Serving.Inference.Runtime;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;
using Serving.Inference.Tokenization;
using Xunit;

namespace Serving.Inference.Node.Tests.Scheduling;

/// <summary>
/// Constrained rows (a JSON schema) and adapter rows (three of the demo model's real adapters) decoded in one batch:
/// each request gets exactly what it gets alone — the same tokens — and every constrained output validates with an
/// independent validator (JsonSchema.Net). The mask acts on a row's logits only; the adapter on a row's projections
/// only; neither leaks into the batch's other rows.
/// </summary>
public sealed class ConstrainedAdapterBatchTests : IDisposable
{
    private const string Schema = """
        {"type":"object","properties":{"name":{"type":"string","maxLength":12},"age":{"type":"integer","minimum":0,"maximum":120},"mood":{"enum":["calm","glad","sad"]}},
         "required":["name","age","mood"],"additionalProperties":false}
        """;

    private static readonly string[] AdapterNames = ["german", "spanish", "italian"];

    private readonly DecoderModel _model = DecoderModel.Load(Alignment.DemoRewardNode.Demo,
        new RuntimeOptions { MaxContext = 256, Threads = 1, AdapterSlots = 4, AdapterMaxRank = 64 });
    private readonly ITokenizer _tokenizer;
    private readonly List<IDisposable> _owned = [];

    public ConstrainedAdapterBatchTests() => _tokenizer = TokenizerLoader.Load(Alignment.DemoRewardNode.Demo, _model.Config.VocabSize);

    public void Dispose()
    {
        foreach (var d in _owned) d.Dispose();
        _model.Dispose();
    }

    /// <summary>A demo adapter through the node's own path (lossless upload → store → decoded modules).</summary>
    private async Task<AdapterRef> AdapterAsync(string name)
    {
        var dir = Path.Combine(Alignment.DemoRewardNode.Demo, "adapters", name);
        var store = new LocalAdapterStore();
        var ingestor = new AdapterIngestor(store, new StaticBaseModelCatalog().Add("demo", _model.Config));
        var files = new PeftFiles(File.ReadAllBytes(Path.Combine(dir, "adapter_config.json")), File.ReadAllBytes(Path.Combine(dir, "adapter_model.safetensors")));
        await ingestor.IngestAsync(new UploadRequest("public", name, "demo", files, new CodecOptions { Codec = AdapterCodec.Lossless }, KeepOriginal: false), CancellationToken.None);
        var adapter = (await store.LoadAdapterAsync("public", name, null, CancellationToken.None))!.Value.Adapter;
        return new AdapterRef($"public/{name}@1", AdapterFactors.FromLora(_model.Config, adapter.Modules.Select(m => new LoraModule(m.Module, m.Layer, m.Rank, m.Scale, m.A, m.B))));
    }

    private GenerationScheduler Scheduler(int rows)
    {
        var decoder = new BatchDecoder(_model, rows);
        var scheduler = new GenerationScheduler(decoder, _tokenizer);
        _owned.Add(scheduler);
        _owned.Add(decoder);
        return scheduler;
    }

    private GenerationRequest Request(string prompt, AdapterRef? adapter, Grammar? grammar, float temperature = 0f, ulong seed = 0) => new()
    {
        PromptTokens = _tokenizer.Encode(prompt),
        Sampling = new SamplingParameters { MaxTokens = grammar is null ? 24 : 80, Temperature = temperature, Seed = seed },
        Adapter = adapter,
        Decoding = grammar is null ? SamplingSpec.Instance : ConstrainedSpec.Wrap(SamplingSpec.Instance, grammar),
    };

    private sealed class Output(GenerationHandle handle)
    {
        public GenerationHandle Handle { get; } = handle;
        public List<int> Tokens { get; } = [];
        public StringBuilder Text { get; } = new();
        public FinishReason? Finish { get; set; }
        public long FirstTokenStep { get; set; } = -1;
    }

    private static void Pump(GenerationScheduler s, IEnumerable<Output> outputs)
    {
        foreach (var o in outputs)
        {
            while (o.Handle.Events.TryRead(out var e))
            {
                if (e.Kind == GenerationEventKind.Finished) o.Finish = e.FinishReason;
                if (e.Kind != GenerationEventKind.Token) continue;
                o.Text.Append(e.Text);
                if (e.TokenId < 0) continue;
                if (o.FirstTokenStep < 0) o.FirstTokenStep = s.Status.Steps;
                o.Tokens.Add(e.TokenId);
            }
        }
    }

    private static List<Output> Run(GenerationScheduler s, IReadOnlyList<GenerationRequest> requests)
    {
        var outputs = requests.Select(r =>
        {
            Assert.Equal(SubmitStatus.Accepted, s.Submit(r, out var h));
            return new Output(h!);
        }).ToList();
        for (var step = 0; step < 1000 && outputs.Any(o => !o.Handle.Events.Completion.IsCompleted); step++)
        {
            s.Step();
            Pump(s, outputs);
        }
        Pump(s, outputs);
        Assert.All(outputs, o => Assert.True(o.Handle.Events.Completion.IsCompleted));
        return outputs;
    }

    private Output Alone(GenerationRequest r) => Run(Scheduler(rows: 1), [r])[0];

    [Fact]
    public async Task ConstrainedAndAdapterRows_InOneBatch_EachEqualsItsRequestAlone_ConstrainedOutputsValidate()
    {
        var grammar = Grammar.FromJsonSchema(Schema);
        var adapters = new List<AdapterRef>();
        foreach (var name in AdapterNames) adapters.Add(await AdapterAsync(name));
        GenerationRequest[] requests =
        [
            Request("Who are you?", null, grammar),
            Request("Tell me about your day.", null, grammar),
            Request("Who are you?", adapters[0], grammar),                     // a constraint and an adapter on one row
            Request("Describe a friend.", null, grammar, temperature: 1f, seed: 5),
            Request("The weather today", adapters[0], null),
            Request("The weather today", adapters[1], null),
            Request("The weather today", adapters[2], null),
            Request("The weather today", null, null),
        ];

        var batch = Run(Scheduler(rows: requests.Length), requests);

        // One batch: every request was admitted together and got its first token in the same step.
        Assert.Single(batch.Select(o => o.FirstTokenStep).Distinct());
        var schema = JsonSchema.FromText(Schema);
        for (var i = 0; i < requests.Length; i++)
        {
            var alone = Alone(requests[i]);
            Assert.True(alone.Tokens.SequenceEqual(batch[i].Tokens), $"request {i}: batch '{batch[i].Text}' vs alone '{alone.Text}'");
            Assert.Equal(alone.Text.ToString(), batch[i].Text.ToString());
            Assert.Equal(alone.Finish, batch[i].Finish);
            if (requests[i].Decoding is not ConstrainedSpec) continue;
            Assert.Equal(FinishReason.Stop, batch[i].Finish);
            var text = batch[i].Text.ToString();
            var result = schema.Evaluate(JsonNode.Parse(text), new EvaluationOptions { RequireFormatValidation = true });
            Assert.True(result.IsValid, $"request {i}: {text} does not validate");
        }
        // The adapters were applied: the three adapted continuations of one prompt differ from the base's and from each other.
        var continuations = batch.Skip(4).Select(o => o.Text.ToString()).ToList();
        Assert.Equal(continuations.Count, continuations.Distinct().Count());
        // And the adapter changed the constrained row too (same prompt, same schema, base vs german).
        Assert.NotEqual(batch[0].Text.ToString(), batch[2].Text.ToString());
    }
}
