using Serving.AdapterStore.Compression;
using Serving.AdapterStore.Peft;
using Serving.Checkpoints;

namespace Serving.AdapterStore.Tests.Compression;

/// <summary>
/// <c>auto</c> against the rule docs/adapter-store.md states: the coarsest ladder step whose predicted kept fraction
/// 1 − 1.7·aligned − 1.2·noise (per-module relative squared errors, averaged over modules) reaches the budget. The
/// error split is re-computed here from dense float64 ΔW and its SVD, not through the store's proxy.
/// </summary>
public sealed class AutoCodecTests
{
    /// <summary>A LoRA whose spectrum decays (σᵢ ∝ 2^−i), like trained adapters, on a small GPT-2 shape.</summary>
    private static AdapterPayload Decaying(int seed)
    {
        var p = TestAdapters.Gpt2Lora(layers: 2, d: 24, rank: 6, seed);
        var tensors = p.Tensors.Select(t => t.Name.EndsWith("lora_A.weight", StringComparison.Ordinal)
            ? t with { Data = t.Data.Select((v, i) => v * MathF.Pow(0.5f, i / (int)t.Shape[1])).ToArray() }
            : t).ToList();
        return p with { Tensors = tensors };
    }

    public static TheoryData<string, double> Fixtures => new()
    {
        { "random", 0.95 }, { "decaying", 0.95 }, { "decaying", 0.9 }, { "random", 0.99 }, { "decaying", 0.999 },
    };

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void Choose_Fixture_PicksTheCoarsestStepPredictedWithinBudget(string fixture, double minKept)
    {
        var payload = fixture == "random" ? TestAdapters.Gpt2Lora(layers: 2, d: 24, rank: 6, seed: 31) : Decaying(32);
        var original = AdapterMaterializer.Materialize(payload);
        int expected = -1;
        for (int i = 0; i < AutoCodec.Ladder.Count && expected < 0; i++)
        {
            var decoded = AdapterMaterializer.Materialize(AdapterContainer.Decode(AdapterContainer.Encode(payload, AutoCodec.Setting(i))));
            var (aligned, noise) = DenseSplit(original, decoded);
            if (1 - 1.7 * aligned - 1.2 * noise >= minKept) expected = i;
        }
        var choice = AutoCodec.Choose(payload, new AutoOptions { MinKept = minKept });
        if (expected < 0)
        {
            Assert.Equal(AdapterCodec.Lossless, choice.Chosen.Codec);
            return;
        }
        Assert.Equal(AutoCodec.Setting(expected), choice.Chosen);
        Assert.True(choice.PredictedKept >= minKept);
        Assert.Equal(AdapterContainer.Encode(payload, AutoCodec.Setting(expected)), choice.Container);
        var (a, n) = DenseSplit(original, AdapterMaterializer.Materialize(AdapterContainer.Decode(choice.Container)));
        Assert.Equal(1 - 1.7 * a - 1.2 * n, choice.PredictedKept, 1e-6);
    }

    /// <summary>auto's choices for the demo adapters as docs/benchmarks.md ("Adapter quality under compression") lists them.</summary>
    [Theory]
    [InlineData("german", 0.23)]
    [InlineData("spanish", 0.21)]
    [InlineData("italian", 0.21)]
    [InlineData("portuguese", 0.23)]
    [InlineData("polish", 0.21)]
    [InlineData("startrek", 0.21)]
    [InlineData("irc", 0.21)]
    [InlineData("animals", 0.19)]
    public void Choose_DemoAdapter_PicksTheDocumentedSetting(string name, double targetError)
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Serving.sln"))) dir = dir.Parent;
        string demo = Path.Combine(dir?.FullName ?? throw new InvalidOperationException("repository root not found"), "models", "demo");
        var shape = BaseModelShape.FromConfig(ModelConfig.Load(Path.Combine(demo, "config.json")));
        var payload = PeftAdapterReader.Read(File.ReadAllBytes(Path.Combine(demo, "adapters", name, "adapter_config.json")),
            File.ReadAllBytes(Path.Combine(demo, "adapters", name, "adapter_model.safetensors")), shape).Payload;
        var choice = AutoCodec.Choose(payload, new AutoOptions());
        Assert.Equal($"quant svd err={targetError.ToString(System.Globalization.CultureInfo.InvariantCulture)}", choice.Chosen.Describe());
        Assert.InRange(choice.PredictedKept, 0.95, 1);
    }

    [Fact]
    public void Constants_AreTheDocumentedOnes()
    {
        Assert.Equal(1.7, AutoCodec.SignalCost);
        Assert.Equal(1.2, AutoCodec.NoiseCost);
        Assert.Equal(0.95, new AutoOptions().MinKept);
        Assert.Equal(AdapterCodec.Auto, new CodecOptions().Codec);
    }

    /// <summary>Per module: σ and singular vectors of dense ΔW (Jacobi on ΔWᵀΔW), lost signal Σ(σᵢ − uᵢᵀΔŴvᵢ)², the rest noise; averaged relative to ‖ΔW‖².</summary>
    internal static (double Aligned, double Noise) DenseSplit(LoraAdapter original, LoraAdapter decoded)
    {
        double aligned = 0, noise = 0;
        foreach (var m in original.Modules)
        {
            int rows = m.OutFeatures, cols = m.InFeatures;
            var w = LowRankTests.Dense(m.A, m.B, m.Rank, cols, rows, m.Scale);
            var r = decoded.Find(m.Layer, m.Module);
            var v = r is null ? new double[w.Length] : LowRankTests.Dense(r.A, r.B, r.Rank, cols, rows, r.Scale);
            double norm = w.Sum(x => x * x), total = w.Zip(v, (x, y) => (x - y) * (x - y)).Sum(), lost = 0;
            foreach (var (sigma, vec) in RightSingularVectors(w, rows, cols).Take(m.Rank))
            {
                if (sigma < 1e-9 * Math.Sqrt(norm)) continue;
                // uᵢ = ΔW·vᵢ/σᵢ; kept coefficient uᵢᵀ·ΔŴ·vᵢ.
                double kept = 0;
                for (int o = 0; o < rows; o++)
                {
                    double wv = 0, vv = 0;
                    for (int i = 0; i < cols; i++)
                    {
                        wv += w[o * cols + i] * vec[i];
                        vv += v[o * cols + i] * vec[i];
                    }
                    kept += wv / sigma * vv;
                }
                lost += (sigma - kept) * (sigma - kept);
            }
            aligned += lost / norm;
            noise += (total - lost) / norm;
        }
        return (aligned / original.Modules.Count, noise / original.Modules.Count);
    }

    private static IEnumerable<(double Sigma, double[] V)> RightSingularVectors(double[] w, int rows, int cols)
    {
        var m = new double[cols, cols];
        var vecs = new double[cols, cols];
        for (int i = 0; i < cols; i++)
        {
            vecs[i, i] = 1;
            for (int j = 0; j < cols; j++)
            {
                for (int r = 0; r < rows; r++) m[i, j] += w[r * cols + i] * w[r * cols + j];
            }
        }
        for (int sweep = 0; sweep < 100; sweep++)
        {
            double off = 0;
            for (int p = 0; p < cols; p++)
            {
                for (int q = p + 1; q < cols; q++) off += m[p, q] * m[p, q];
            }
            if (off < 1e-28) break;
            for (int p = 0; p < cols; p++)
            {
                for (int q = p + 1; q < cols; q++)
                {
                    if (Math.Abs(m[p, q]) < 1e-300) continue;
                    double theta = (m[q, q] - m[p, p]) / (2 * m[p, q]);
                    double t = Math.Sign(theta == 0 ? 1 : theta) / (Math.Abs(theta) + Math.Sqrt(theta * theta + 1));
                    double c = 1 / Math.Sqrt(t * t + 1), s = t * c;
                    for (int k = 0; k < cols; k++)
                    {
                        (m[k, p], m[k, q]) = (c * m[k, p] - s * m[k, q], s * m[k, p] + c * m[k, q]);
                        (vecs[k, p], vecs[k, q]) = (c * vecs[k, p] - s * vecs[k, q], s * vecs[k, p] + c * vecs[k, q]);
                    }
                    for (int k = 0; k < cols; k++) (m[p, k], m[q, k]) = (c * m[p, k] - s * m[q, k], s * m[p, k] + c * m[q, k]);
                }
            }
        }
        return Enumerable.Range(0, cols).Select(i => (Math.Sqrt(Math.Max(0, m[i, i])), Enumerable.Range(0, cols).Select(k => vecs[k, i]).ToArray()))
            .OrderByDescending(x => x.Item1);
    }
}
