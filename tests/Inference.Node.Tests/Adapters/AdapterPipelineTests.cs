using Serving.AdapterStore;
using Serving.AdapterStore.Compression;
using Serving.AdapterStore.Ingest;
using Serving.AdapterStore.Peft;
using Serving.AdapterStore.Storage;
using Serving.AdapterStore.Tests.Peft;
using Serving.Checkpoints;
using Serving.Fixtures;
using Serving.Inference.Adapters;
using Serving.Inference.Engine;
using Serving.Inference.Node.Adapters;
using Serving.Inference.Runtime;
using Serving.Inference.Tests.Reference;
using Xunit;

namespace Serving.Inference.Node.Tests.Adapters;

/// <summary>
/// Issue #7 acceptance 1: PEFT uploads of every kind go through the store's reader/validator, container, decoder and
/// materialiser (the node's path: ingest → store → <c>LoadAdapterAsync</c>), become <see cref="AdapterFactors"/> and
/// run in the engine; a row's logits match the float64 reference with <c>ΔW = s·B·A</c> merged into the base weights.
/// ΔW is computed here in float64 from the decoded PEFT-oriented factors (for LoRA kinds the factors and scale are also
/// checked against the uploaded tensors and config). VeRA's and VB-LoRA's materialisation against peft's formulas is
/// checked in AdapterStore.Tests. For a ComPEFT upload the reference is the decoded (lossy) factors.
/// </summary>
public sealed class AdapterPipelineTests
{
    private static readonly Lock Gate = new();
    private static readonly Dictionary<string, string> Dirs = [];

    /// <summary>Fixture bases whose widths the PEFT generators accept (VB-LoRA's vector length 16 divides each).</summary>
    private static string Dir(string arch)
    {
        lock (Gate)
        {
            if (Dirs.TryGetValue(arch, out var dir)) return dir;
            dir = Path.Combine(Path.GetTempPath(), "serving-node-tests-" + Environment.ProcessId, "pipeline-" + arch);
            FixtureCheckpoint.Write(dir, arch == "gpt2"
                ? new FixtureShape { Architecture = ModelArchitecture.Gpt2, Hidden = 64, Layers = 2, Heads = 4, Intermediate = 256, Vocab = 300, MaxPositions = 128, InitStd = 0.2f }
                : new FixtureShape
                {
                    Architecture = ModelArchitecture.Llama, Hidden = 64, Layers = 2, Heads = 4, KvHeads = 1, Intermediate = 96, Vocab = 300,
                    MaxPositions = 128, TieEmbeddings = false, InitStd = 0.2f,
                });
            return Dirs[arch] = dir;
        }
    }

    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (var arch in new[] { "gpt2", "llama" })
        {
            foreach (var kind in new[] { "lora", "rslora", "rank_pattern", "vera", "vblora", "vblora_topk", "compeft" }) data.Add(arch, kind);
        }
        return data;
    }

    private static PeftFolder Folder(string arch, string kind, BaseModelShape shape)
    {
        var gpt2 = arch == "gpt2";
        switch (kind)
        {
            case "lora":
            case "compeft":
                return gpt2 ? PeftFolders.Gpt2Lora(seed: 11, r: 4, baseShape: shape) : WithConfig(PeftFolders.LlamaLora(seed: 12, r: 8, baseShape: shape), c => c.Replace("\"use_rslora\": true", "\"use_rslora\": false"));
            case "rslora":
                return gpt2 ? WithConfig(PeftFolders.Gpt2Lora(seed: 13, r: 8, baseShape: shape), c => c.Replace("\"use_rslora\": false", "\"use_rslora\": true")) : PeftFolders.LlamaLora(seed: 14, r: 8, baseShape: shape);
            case "rank_pattern":
                if (gpt2) return PeftFolders.Gpt2Lora(seed: 15, r: 6, rankPatternFc: true, baseShape: shape);
                return LlamaRankPattern(shape);
            case "vera":
                return PeftFolders.Vera(shape, seed: 16, r: 8);
            case "vblora":
                return PeftFolders.VbLora(shape, topkOnly: false, seed: 17);
            case "vblora_topk":
                return PeftFolders.VbLora(shape, topkOnly: true, seed: 18);
            default:
                throw new ArgumentException(kind);
        }
    }

    private static PeftFolder WithConfig(PeftFolder f, Func<string, string> edit) => f with { ConfigJson = edit(f.ConfigJson) };

    /// <summary>Llama LoRA r = 6 with <c>rank_pattern</c> giving down_proj rank 2 and v_proj rank 3.</summary>
    private static PeftFolder LlamaRankPattern(BaseModelShape shape)
    {
        var rng = new Random(19);
        var list = new List<(string, long[], float[])>();
        for (var l = 0; l < shape.NumLayers; l++)
        {
            foreach (var module in shape.Modules)
            {
                var r = module.EndsWith("down_proj", StringComparison.Ordinal) ? 2 : module.EndsWith("v_proj", StringComparison.Ordinal) ? 3 : 6;
                var (i, o) = shape.Widths(module)!.Value;
                var p = $"base_model.model.model.layers.{l}.{module}";
                list.Add(($"{p}.lora_A.weight", [r, i], PeftFolders.Random(rng, r * i)));
                list.Add(($"{p}.lora_B.weight", [o, r], PeftFolders.Random(rng, o * r)));
            }
        }
        var config = PeftFolders.LoraConfig("x", 6, 12, new[] { "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" }, fanInFanOut: false)
            .Replace("\"rank_pattern\": {}", "\"rank_pattern\": {\"down_proj\": 2, \"v_proj\": 3}");
        return PeftFolders.Build(config, list);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task StoredAdapter_RowLogitsMatchFloat64ReferenceWithDeltaMerged(string arch, string kind)
    {
        var dir = Dir(arch);
        var config = ModelConfig.Load(Path.Combine(dir, "config.json"));
        var shape = BaseModelShape.FromConfig(config);
        var folder = Folder(arch, kind, shape);

        // The node's path: ingest (validate, encode) → store → read, verify, decode, materialise.
        var store = new LocalAdapterStore();
        var ingestor = new AdapterIngestor(store, new StaticBaseModelCatalog().Add("base", config));
        var codec = kind == "compeft" ? new CodecOptions { Codec = AdapterCodec.ComPeft } : new CodecOptions { Codec = AdapterCodec.Lossless };
        await ingestor.IngestAsync(new UploadRequest("public", "x", "base", new PeftFiles(folder.ConfigBytes, folder.Safetensors), codec, false), CancellationToken.None);
        var (meta, adapter) = (await store.LoadAdapterAsync("public", "x", null, CancellationToken.None))!.Value;
        Assert.Equal(kind == "compeft" ? AdapterCodec.ComPeft : AdapterCodec.Lossless, meta.Codec);
        CheckAgainstUpload(kind, folder, adapter, shape);

        var modules = adapter.Modules.Select(m => new LoraModule(m.Module, m.Layer, m.Rank, m.Scale, m.A, m.B)).ToList();
        using var model = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = 1, MaxContext = 64, AdapterSlots = 1 });
        using var dec = new BatchDecoder(model);
        dec.Adapters!.Write(0, AdapterFactors.FromLora(config, modules));
        var reference = new ReferenceModel(dir, Deltas(config, adapter.Modules));
        var baseline = new ReferenceModel(dir);

        var tokens = new List<int> { 5, 77, 123, 9, 250 };
        var seq = dec.TryAllocate()!;
        dec.SetAdapter(seq, 0);
        var logits = dec.Prefill(seq, [.. tokens]).ToArray();
        var expected = reference.Forward(tokens).Logits[^1];
        Assert.True(MaxDiff(baseline.Forward(tokens).Logits[^1], expected) > 1e-3, $"{arch} {kind}: the adapter barely changes the logits");
        AssertClose(expected, logits, 1e-4, $"{arch} {kind} prefill");
        for (var step = 0; step < 4; step++)
        {
            var next = ArgMax(logits);
            tokens.Add(next);
            seq.PendingToken = next;
            logits = dec.Decode().ToArray();
            AssertClose(reference.Forward(tokens).Logits[^1], logits, 1e-4, $"{arch} {kind} decode {step}");
        }
    }

    /// <summary>LoRA kinds: decoded A/B equal the uploaded tensors (lossless) and the scale follows alpha, r, rsLoRA and rank_pattern.</summary>
    private static void CheckAgainstUpload(string kind, PeftFolder folder, LoraAdapter adapter, BaseModelShape shape)
    {
        if (kind is not ("lora" or "rslora" or "rank_pattern" or "compeft")) return;
        var cfg = PeftConfig.Parse(folder.ConfigBytes);
        var anyDifferent = false;
        foreach (var m in adapter.Modules)
        {
            var path = "base_model.model." + shape.PathOf(m.Layer, m.Module);
            var (aShape, a) = folder.Tensors[path + ".lora_A.weight"];
            var (_, b) = folder.Tensors[path + ".lora_B.weight"];
            var r = (int)aShape[0];
            Assert.Equal(r, m.Rank);
            var alpha = System.Text.Json.JsonDocument.Parse(folder.ConfigJson).RootElement.GetProperty("lora_alpha").GetDouble();
            var scale = kind == "rslora" || folder.ConfigJson.Contains("\"use_rslora\": true", StringComparison.Ordinal) ? alpha / Math.Sqrt(r) : alpha / r;
            Assert.Equal(scale, m.Scale, 1e-5);
            if (kind == "compeft")
            {
                anyDifferent |= MaxDiff(a, m.A) > 0 || MaxDiff(b, m.B) > 0;
            }
            else
            {
                Assert.Equal(a, m.A);
                Assert.Equal(b, m.B);
            }
        }
        if (kind == "compeft") Assert.True(anyDifferent, "ComPEFT should be lossy");
        _ = cfg;
    }

    /// <summary>Σ s·B·A per weight tensor in the checkpoint's layout (GPT-2 Conv1D stores [in, out]), in float64.</summary>
    private static Dictionary<string, double[]> Deltas(ModelConfig c, IEnumerable<LoraWeights> modules, double weight = 1, Dictionary<string, double[]>? into = null)
    {
        var deltas = into ?? [];
        var gpt2 = c.Architecture == ModelArchitecture.Gpt2;
        foreach (var m in modules)
        {
            var name = (gpt2 ? $"transformer.h.{m.Layer}." : $"model.layers.{m.Layer}.") + m.Module + ".weight";
            int inDim = m.InFeatures, outDim = m.OutFeatures;
            if (!deltas.TryGetValue(name, out var delta)) deltas[name] = delta = new double[inDim * outDim];
            for (var o = 0; o < outDim; o++)
            {
                for (var i = 0; i < inDim; i++)
                {
                    double sum = 0;
                    for (var k = 0; k < m.Rank; k++) sum += (double)m.B[o * m.Rank + k] * m.A[k * inDim + i];
                    delta[gpt2 ? i * outDim + o : o * inDim + i] += weight * m.Scale * sum;
                }
            }
        }
        return deltas;
    }

    internal static Dictionary<string, double[]> MergedDeltas(ModelConfig c, params (LoraAdapter Adapter, double Weight)[] parts)
    {
        var deltas = new Dictionary<string, double[]>();
        foreach (var (a, w) in parts) Deltas(c, a.Modules, w, deltas);
        return deltas;
    }

    internal static int ArgMax(IReadOnlyList<double> v)
    {
        var best = 0;
        for (var i = 1; i < v.Count; i++) if (v[i] > v[best]) best = i;
        return best;
    }

    private static int ArgMax(float[] v)
    {
        var best = 0;
        for (var i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }

    private static void AssertClose(IReadOnlyList<double> expected, float[] actual, double tol, string what)
    {
        Assert.Equal(expected.Count, actual.Length);
        for (var i = 0; i < actual.Length; i++)
        {
            if (Math.Abs(expected[i] - actual[i]) > tol) Assert.Fail($"{what}: logit {i} is {actual[i]}, reference {expected[i]}");
        }
    }

    private static double MaxDiff(IReadOnlyList<double> a, IReadOnlyList<double> b) => a.Select((v, i) => Math.Abs(v - b[i])).Max();

    private static double MaxDiff(float[] a, float[] b) => a.Select((v, i) => (double)Math.Abs(v - b[i])).Max();
}
