using System.Text.Json;
using Serving.Checkpoints;
using Serving.Checkpoints.RewardHeads;
using Serving.Inference.Adapters;
using Serving.Inference.Engine;
using Serving.Inference.Rewards;
using Serving.Inference.Runtime;
using Serving.Inference.Tests.Engine;
using Xunit;

namespace Serving.Inference.Tests.Rewards;

/// <summary>
/// Reward heads evaluated in the decode step: against the forge's PyTorch dumps and an independent float64
/// re-computation of the head's formula from the hidden states; logits bit-identical with and without a head.
/// </summary>
public sealed class RewardHeadTests
{
    private static string DemoHeadDir => Path.Combine(DemoModelReferenceTests.DemoDirectory, "reward-head");

    private static SafetensorsFile Reference() =>
        SafetensorsFile.Open(Path.Combine(DemoModelReferenceTests.DemoDirectory, "reference", "reference.safetensors"));

    private static IEnumerable<string> Prompts(SafetensorsFile r) =>
        r.Tensors.Keys.Where(k => k.EndsWith(".reward", StringComparison.Ordinal)).Select(k => k[..^".reward".Length]).Order();

    /// <summary>The head's formula in float64, read straight from config.json and the tensors (not through RewardHead).</summary>
    internal static double[] Float64Rewards(string headDir, ModelConfig c, (float[] W, float[]? B) norm, ReadOnlySpan<float> hidden, int positions)
    {
        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(headDir, "config.json")));
        var root = config.RootElement;
        using var tensors = SafetensorsFile.Open(Path.Combine(headDir, "head.safetensors"));
        var layers = root.GetProperty("layers").EnumerateArray()
            .Select(l => (W: tensors.ReadFloat32(l.GetProperty("weight").GetString()!), B: tensors.ReadFloat32(l.GetProperty("bias").GetString()!),
                Shape: l.GetProperty("shape").EnumerateArray().Select(x => x.GetInt32()).ToArray()))
            .ToList();
        var activation = root.GetProperty("activation").GetString();
        var pooling = root.GetProperty("pooling").GetString();
        var normed = root.GetProperty("input").GetString() == "final_norm";
        var d = c.HiddenSize;
        var rewards = new double[positions];
        double sum = 0;
        for (var t = 0; t < positions; t++)
        {
            var x = new double[d];
            for (var i = 0; i < d; i++) x[i] = hidden[t * d + i];
            if (normed)
            {
                if (c.Architecture == ModelArchitecture.Gpt2)
                {
                    var mean = x.Average();
                    var variance = x.Select(v => (v - mean) * (v - mean)).Average();
                    x = x.Select((v, i) => (v - mean) / Math.Sqrt(variance + c.NormEps) * norm.W[i] + norm.B![i]).ToArray();
                }
                else
                {
                    var ms = x.Select(v => v * v).Average();
                    x = x.Select((v, i) => v / Math.Sqrt(ms + c.NormEps) * norm.W[i]).ToArray();
                }
            }
            for (var l = 0; l < layers.Count; l++)
            {
                var (w, b, shape) = layers[l];
                var y = new double[shape[0]];
                for (var o = 0; o < shape[0]; o++)
                {
                    double acc = b[o];
                    for (var i = 0; i < shape[1]; i++) acc += (double)w[o * shape[1] + i] * x[i];
                    y[o] = l < layers.Count - 1 ? Activate(activation!, acc) : acc;
                }
                x = y;
            }
            sum += x[0];
            rewards[t] = pooling switch { "sum" => sum, "mean" => sum / (t + 1), _ => x[0] };
        }
        return rewards;
    }

    private static double Activate(string name, double v) => name switch
    {
        "tanh" => Math.Tanh(v),
        "relu" => Math.Max(0, v),
        "sigmoid" => 1 / (1 + Math.Exp(-v)),
        "silu" => v / (1 + Math.Exp(-v)),
        "gelu" => 0.5 * v * (1 + Erf(v / Math.Sqrt(2))),
        _ => v,
    };

    // A&S 7.1.26 in double is 1.5e-7 accurate: enough for a 1e-4 check, and independent of the engine's fit.
    private static double Erf(double x)
    {
        var sign = Math.Sign(x);
        x = Math.Abs(x);
        var t = 1 / (1 + 0.3275911 * x);
        var y = 1 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.Exp(-x * x);
        return sign * y;
    }

    internal static RewardHead DemoHead(DecoderModel model) =>
        new(RewardHeadReader.ReadFolder(DemoHeadDir, model.Config), model, "public/positive@1");

    [Fact]
    public void Prefill_DemoHead_MatchesPyTorchDumpsAndFloat64Formula()
    {
        using var r = Reference();
        using var model = DecoderModel.Load(DemoModelReferenceTests.DemoDirectory, new RuntimeOptions { MaxBatch = 1, MaxContext = 256 });
        var head = DemoHead(model);
        var c = model.Config;
        var prompts = Prompts(r).ToList();
        Assert.NotEmpty(prompts);
        foreach (var p in prompts)
        {
            var ids = r.ReadInt64(p + ".input_ids").Select(x => (int)x).ToArray();
            var expected = r.ReadFloat32(p + ".reward");
            var hidden = r.ReadFloat32(p + ".hidden");
            var layerHidden = hidden.AsSpan(head.Layer * ids.Length * c.HiddenSize, ids.Length * c.HiddenSize);
            var float64 = Float64Rewards(DemoHeadDir, c, model.FinalNorm, layerHidden, ids.Length);
            ReferenceLogitsTests.AssertClose(expected.Select(x => (double)x).ToArray(), float64.Select(x => (float)x).ToArray(), 1e-4, $"{p}: float64 formula vs PyTorch");

            // Token by token: prefill of the first token, then decode steps; the reward after each matches both.
            using var dec = new BatchDecoder(model, 1);
            var seq = dec.TryAllocate()!;
            dec.SetRewardHead(seq, head);
            dec.Prefill(seq, ids.AsSpan(0, 1));
            var actual = new List<float> { seq.Reward };
            for (var i = 1; i < ids.Length; i++)
            {
                seq.PendingToken = ids[i];
                dec.Decode();
                actual.Add(seq.Reward);
            }
            ReferenceLogitsTests.AssertClose(float64, actual.ToArray(), 1e-4, $"{p}: decode-path rewards");

            // One prefill of the whole prompt ends at the last position's reward.
            using var dec2 = new BatchDecoder(model, 1);
            var whole = dec2.TryAllocate()!;
            dec2.SetRewardHead(whole, head);
            dec2.Prefill(whole, ids);
            Assert.InRange(Math.Abs(whole.Reward - float64[^1]), 0, 1e-4);
        }
    }

    /// <summary>A random head on a GPT-2 fixture: LayerNorm input, a middle layer, GELU, mean pooling; and raw input, relu, last.</summary>
    [Theory]
    [InlineData("gpt2", 1, "final_norm", "gelu", "mean")]
    [InlineData("llama", 2, "hidden", "relu", "last")]
    [InlineData("llama", 0, "final_norm", "silu", "sum")]
    public void RandomHead_PrefillAndDecode_MatchFloat64Formula(string family, int layer, string input, string activation, string pooling)
    {
        var dir = family == "gpt2" ? Fixtures.TinyGpt2 : Fixtures.TinyLlama;
        using var model = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = 1, MaxContext = 64 });
        var c = model.Config;
        var headDir = WriteRandomHead(c, layer, input, activation, pooling, seed: layer + 3);
        var head = new RewardHead(RewardHeadReader.ReadFolder(headDir, c), model, "t/h@1");
        int[] prompt = [5, 17, 42, 7, 99, 3];
        using var dec = new BatchDecoder(model, 1);
        var seq = dec.TryAllocate()!;
        dec.SetRewardHead(seq, head);
        var hiddenCapture = new float[(c.NumLayers + 1) * prompt.Length * c.HiddenSize];
        dec.Prefill(seq, prompt, hiddenCapture);
        var layerHidden = hiddenCapture.AsSpan(layer * prompt.Length * c.HiddenSize, prompt.Length * c.HiddenSize);
        var expected = Float64Rewards(headDir, c, model.FinalNorm, layerHidden, prompt.Length);
        Assert.InRange(Math.Abs(seq.Reward - expected[^1]), 0, 1e-4);

        // The same tokens one by one through decode steps.
        using var dec2 = new BatchDecoder(model, 1);
        var s2 = dec2.TryAllocate()!;
        dec2.SetRewardHead(s2, head);
        dec2.Prefill(s2, prompt.AsSpan(0, 1));
        for (var i = 1; i < prompt.Length; i++)
        {
            s2.PendingToken = prompt[i];
            dec2.Decode();
            Assert.InRange(Math.Abs(s2.Reward - expected[i]), 0, 1e-4);
        }
    }

    [Theory]
    [InlineData(AdapterKernelKind.Segmented)]
    [InlineData(AdapterKernelKind.BatchedMatMul)]
    public void Logits_WithAndWithoutHead_BitIdentical_AloneAndInAMixedAdapterBatch(AdapterKernelKind kernel)
    {
        using var model = DecoderModel.Load(DemoModelReferenceTests.DemoDirectory,
            new RuntimeOptions { MaxBatch = 4, MaxContext = 64, AdapterSlots = 2, AdapterKernel = kernel });
        var head = DemoHead(model);
        var german = AdapterFactors.FromLora(model.Config, AdapterTests.RandomModules(model.Config, seed: 5, rankBase: 4));
        int[][] prompts = [[0, 262, 454, 502], [0, 1, 448, 302, 3, 2], [0, 424, 351], [0, 5, 6, 7, 8]];
        int[] slots = [-1, 0, 0, -1];

        List<float[]> Run(bool[] withHead)
        {
            using var dec = new BatchDecoder(model);
            dec.Adapters!.Write(0, german);
            var seqs = new Sequence[prompts.Length];
            var outs = new List<float[]>();
            for (var r = 0; r < prompts.Length; r++)
            {
                seqs[r] = dec.TryAllocate()!;
                dec.SetAdapter(seqs[r], slots[r]);
                if (withHead[r]) dec.SetRewardHead(seqs[r], head);
                outs.Add(dec.Prefill(seqs[r], prompts[r]).ToArray());
            }
            for (var s = 0; s < 5; s++)
            {
                for (var r = 0; r < seqs.Length; r++) seqs[r].PendingToken = 10 + 7 * s + r;
                outs.Add(dec.Decode().ToArray());
            }
            if (withHead.Any(x => x)) Assert.Contains(seqs, q => float.IsFinite(q.Reward));
            return outs;
        }

        var without = Run([false, false, false, false]);
        foreach (var pattern in new[] { new[] { true, true, true, true }, new[] { false, true, false, true } })
        {
            var with = Run(pattern);
            for (var i = 0; i < without.Count; i++) Assert.True(without[i].AsSpan().SequenceEqual(with[i]), $"logits of output {i} changed with heads {string.Join(",", pattern)}");
        }
    }

    [Fact]
    public void Fork_CopiesTheRewardState_AndBothRowsContinueIndependently()
    {
        using var model = DecoderModel.Load(DemoModelReferenceTests.DemoDirectory, new RuntimeOptions { MaxBatch = 2, MaxContext = 64 });
        var head = DemoHead(model);
        using var dec = new BatchDecoder(model);
        var parent = dec.TryAllocate()!;
        dec.SetRewardHead(parent, head);
        dec.Prefill(parent, [0, 262, 454]);
        var child = dec.TryFork(parent)!;
        Assert.Equal(parent.Reward, child.Reward);
        parent.PendingToken = 502;
        child.PendingToken = 329;
        dec.Decode();
        Assert.NotEqual(parent.Reward, child.Reward);

        // Each equals a fresh row fed the same tokens.
        foreach (var (seq, last) in new[] { (parent, 502), (child, 329) })
        {
            using var solo = new BatchDecoder(model, 1);
            var s = solo.TryAllocate()!;
            solo.SetRewardHead(s, head);
            solo.Prefill(s, [0, 262, 454, last]);
            Assert.InRange(Math.Abs(s.Reward - seq.Reward), 0, 1e-5);
        }
    }

    /// <summary>Writes a random head in the reward-head folder format.</summary>
    internal static string WriteRandomHead(ModelConfig c, int layer, string input, string activation, string pooling, int seed, int hidden = 24)
    {
        var dir = Path.Combine(Path.GetTempPath(), "serving-heads-" + Environment.ProcessId, $"{c.HiddenSize}-{layer}-{input}-{activation}-{pooling}-{seed}");
        Directory.CreateDirectory(dir);
        var rng = new Random(seed);
        float[] Rand(int n, double scale) => Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() * 2 - 1) * scale)).ToArray();
        SafetensorsWriter.Write(Path.Combine(dir, "head.safetensors"),
        [
            SafetensorsWriter.Entry.F32("layers.0.weight", [hidden, c.HiddenSize], Rand(hidden * c.HiddenSize, 0.3)),
            SafetensorsWriter.Entry.F32("layers.0.bias", [hidden], Rand(hidden, 0.1)),
            SafetensorsWriter.Entry.F32("layers.1.weight", [1, hidden], Rand(hidden, 0.5)),
            SafetensorsWriter.Entry.F32("layers.1.bias", [1], Rand(1, 0.1)),
        ]);
        File.WriteAllText(Path.Combine(dir, "config.json"), JsonSerializer.Serialize(new
        {
            kind = "reward-head",
            layer,
            input,
            pooling,
            activation,
            layers = new object[]
            {
                new { weight = "layers.0.weight", bias = "layers.0.bias", shape = new[] { hidden, c.HiddenSize } },
                new { weight = "layers.1.weight", bias = "layers.1.bias", shape = new[] { 1, hidden } },
            },
        }));
        return dir;
    }
}
