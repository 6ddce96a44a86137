using Serving.AdapterStore.Compression;
using Serving.AdapterStore.Peft;

namespace Serving.AdapterStore.Tests.Compression;

/// <summary>
/// Every codec setting decodes to exactly what the independent reader (<see cref="NaiveContainer"/>) reads from the
/// same bytes, and each encoder does what its description says, checked against naive re-statements: the k-bit and
/// α rules element by element, the error target on densely formed ΔW in float64.
/// </summary>
public sealed class CodecTests
{
    public static TheoryData<string> Settings =>
    [
        "lossless", "compeft", "compeft per-tensor", "compeft alpha=tensor", "compeft per-tensor alpha=component",
        "compeft per-tensor alpha=component mag=2", "compeft mag=1", "compeft alpha=tensor mag=4", "compeft svd per-tensor alpha=component mag=2",
        "compeft svd e=0.8", "quant factors int8", "quant factors int4", "quant factors int2", "quant svd int3", "quant svd e=0.7 int4",
        "quant svd err=0.05", "quant svd err=0.3", "quant svd err=0.6", "quant factors err=0.3", "quant svd err=0.3 global",
    ];

    internal static CodecOptions Parse(string s)
    {
        var w = s.Split(' ');
        var c = new ComPeftOptions { Density = 0.2 };
        var q = new QuantOptions();
        foreach (var word in w.Skip(1))
        {
            var (k, v) = word.Contains('=') ? (word[..word.IndexOf('=')], word[(word.IndexOf('=') + 1)..]) : (word, "");
            double D() => double.Parse(v, System.Globalization.CultureInfo.InvariantCulture);
            (c, q) = k switch
            {
                "per-tensor" => (c with { Scope = ThresholdScope.PerTensor }, q),
                "alpha" => (c with { Alpha = Enum.Parse<AlphaMode>(v, true) }, q),
                "mag" => (c with { MagnitudeBits = (int)D() }, q),
                "svd" => (c with { Basis = FactorBasis.Svd }, q with { Basis = FactorBasis.Svd }),
                "factors" => (c with { Basis = FactorBasis.Factors }, q with { Basis = FactorBasis.Factors }),
                "e" => (c with { Energy = D() }, q with { Energy = D() }),
                "err" => (c, q with { TargetError = D() }),
                "global" => (c, q with { Budget = BudgetScope.Global }),
                _ when k.StartsWith("int", StringComparison.Ordinal) => (c, q with { Bits = int.Parse(k[3..], System.Globalization.CultureInfo.InvariantCulture) }),
                _ => throw new ArgumentException(word),
            };
        }
        var codec = w[0] switch { "lossless" => AdapterCodec.Lossless, "compeft" => AdapterCodec.ComPeft, _ => AdapterCodec.Quant };
        return new CodecOptions { Codec = codec, ComPeft = c, Quant = q };
    }

    [Theory]
    [MemberData(nameof(Settings))]
    public void Decode_EverySetting_EqualsTheIndependentReader(string setting)
    {
        var payload = TestAdapters.Gpt2Lora(layers: 2, d: 32, rank: 4, seed: 21);
        var bytes = AdapterContainer.Encode(payload, Parse(setting));
        var decoded = AdapterContainer.Decode(bytes);
        var (naive, header) = NaiveContainer.Decode(bytes);
        Assert.Equal(naive.Count, decoded.Tensors.Count);
        foreach (var t in decoded.Tensors)
        {
            Assert.Equal(naive[t.Name].Shape, t.Shape);
            Assert.Equal(naive[t.Name].Data.Select(BitConverter.SingleToInt32Bits), t.Data.Select(BitConverter.SingleToInt32Bits));
        }
        Assert.Equal(Parse(setting).Describe(), header.GetProperty("setting").GetString());
        // The decoded manifest fits the decoded tensors (the node materialises them).
        var adapter = AdapterMaterializer.Materialize(decoded);
        Assert.All(adapter.Modules, m => Assert.Equal(m.Rank * m.InFeatures, m.A.Length));
    }

    [Theory]
    [InlineData(8)]
    [InlineData(4)]
    [InlineData(2)]
    public void Quant_FactorsFixedBits_EqualsNaiveQuantiser(int bits)
    {
        var payload = TestAdapters.Gpt2Lora(layers: 1, d: 16, rank: 3, seed: 5);
        var decoded = AdapterContainer.Decode(AdapterContainer.Encode(payload, Parse($"quant factors int{bits}")));
        int levels = (1 << (bits - 1)) - 1;
        foreach (var t in payload.Tensors)
        {
            bool isA = t.Name.EndsWith("lora_A.weight", StringComparison.Ordinal);
            int rows = (int)t.Shape[0], cols = (int)t.Shape[1];
            var expected = new float[t.Data.Length];
            for (int c = 0; c < (isA ? rows : cols); c++)
            {
                var idx = Enumerable.Range(0, isA ? cols : rows).Select(i => isA ? c * cols + i : i * cols + c).ToList();
                float max = idx.Max(i => Math.Abs(t.Data[i]));
                float step = RoundUpToBf16(Math.Max(max / (float)levels, max / 32767f));
                foreach (int i in idx) expected[i] = max == 0 ? 0 : (float)Math.Round(t.Data[i] / (double)step, MidpointRounding.ToEven) * step;
            }
            Assert.Equal(expected, decoded.Find(t.Name)!.Data);
        }
    }

    private static float RoundUpToBf16(float x)
    {
        // Next representable value with the low 16 bits of the float32 cleared, at or above x.
        float down = BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(x) & unchecked((int)0xFFFF0000));
        return down == x ? x : BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(down) + 0x10000);
    }

    [Theory]
    [InlineData("quant svd err=0.1")]
    [InlineData("quant svd err=0.3")]
    [InlineData("quant factors err=0.3")]
    [InlineData("quant svd err=0.5")]
    public void Quant_TargetError_HoldsForEveryModuleOnDenseDelta(string setting)
    {
        double target = double.Parse(setting[(setting.IndexOf('=') + 1)..], System.Globalization.CultureInfo.InvariantCulture);
        var payload = TestAdapters.Gpt2Lora(layers: 2, d: 24, rank: 6, seed: 8);
        var original = AdapterMaterializer.Materialize(payload);
        var decoded = AdapterMaterializer.Materialize(AdapterContainer.Decode(AdapterContainer.Encode(payload, Parse(setting))));
        foreach (var m in original.Modules)
        {
            double rel = RelativeDenseError(m, decoded.Find(m.Layer, m.Module));
            Assert.InRange(rel, 0.5 * target, target * (1 + 1e-6));
        }
    }

    [Fact]
    public void Quant_GlobalBudget_HoldsOverallAndSpendsUnevenly()
    {
        var payload = TestAdapters.Gpt2Lora(layers: 2, d: 24, rank: 6, seed: 9);
        var original = AdapterMaterializer.Materialize(payload);
        var decoded = AdapterMaterializer.Materialize(AdapterContainer.Decode(AdapterContainer.Encode(payload, Parse("quant svd err=0.3 global"))));
        double num = 0, den = 0;
        var per = new List<double>();
        foreach (var m in original.Modules)
        {
            var w = LowRankTests.Dense(m.A, m.B, m.Rank, m.InFeatures, m.OutFeatures, m.Scale);
            double n2 = w.Sum(x => x * x), rel = RelativeDenseError(m, decoded.Find(m.Layer, m.Module));
            num += rel * rel * n2;
            den += n2;
            per.Add(rel);
        }
        Assert.InRange(Math.Sqrt(num / den), 0.15, 0.3 * (1 + 1e-6));
        Assert.True(per.Max() - per.Min() > 0.02, "one step scale for all modules gives them different relative errors");
    }

    internal static double RelativeDenseError(LoraWeights m, LoraWeights? r)
    {
        var w = LowRankTests.Dense(m.A, m.B, m.Rank, m.InFeatures, m.OutFeatures, m.Scale);
        var v = r is null ? new double[w.Length] : LowRankTests.Dense(r.A, r.B, r.Rank, r.InFeatures, r.OutFeatures, r.Scale);
        double num = 0, den = 0;
        for (int i = 0; i < w.Length; i++)
        {
            num += (w[i] - v[i]) * (w[i] - v[i]);
            den += w[i] * w[i];
        }
        return Math.Sqrt(num / den);
    }

    [Theory]
    [InlineData(AlphaMode.Tensor)]
    [InlineData(AlphaMode.Component)]
    public void ComPeft_MseAlpha_EqualsNaiveRestatement(AlphaMode mode)
    {
        var payload = TestAdapters.Gpt2Lora(layers: 1, d: 16, rank: 4, seed: 6);
        var options = new CodecOptions { Codec = AdapterCodec.ComPeft, ComPeft = new() { Density = 0.25, Scope = ThresholdScope.PerTensor, Alpha = mode } };
        var decoded = AdapterContainer.Decode(AdapterContainer.Encode(payload, options));
        foreach (var t in payload.Tensors)
        {
            var sorted = t.Data.Select(MathF.Abs).OrderBy(x => x).ToArray();
            float threshold = sorted[t.Data.Length - (int)Math.Floor(t.Data.Length * 0.25) - 1];
            bool Kept(int i) => t.Data[i] != 0 && MathF.Abs(t.Data[i]) >= threshold;
            bool isA = t.Name.EndsWith("lora_A.weight", StringComparison.Ordinal);
            int cols = (int)t.Shape[1];
            int Component(int i) => mode == AlphaMode.Tensor ? 0 : isA ? i / cols : i % cols;
            var groups = Enumerable.Range(0, t.Data.Length).Where(Kept).GroupBy(Component).ToDictionary(g => g.Key, g => g.Average(i => (double)MathF.Abs(t.Data[i])));
            var expected = new float[t.Data.Length];
            for (int i = 0; i < expected.Length; i++)
            {
                if (!Kept(i)) continue;
                float alpha = mode == AlphaMode.Tensor ? (float)groups[0] : NearestBf16((float)groups[Component(i)]);
                expected[i] = MathF.Sign(t.Data[i]) * alpha;
            }
            Assert.Equal(expected, decoded.Find(t.Name)!.Data);
        }
    }

    private static float NearestBf16(float x)
    {
        int bits = BitConverter.SingleToInt32Bits(x);
        int lower = bits & unchecked((int)0xFFFF0000), remainder = bits & 0xFFFF;
        bool up = remainder > 0x8000 || (remainder == 0x8000 && (lower & 0x10000) != 0);
        return BitConverter.Int32BitsToSingle(up ? lower + 0x10000 : lower);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void ComPeft_MagnitudeBits_KeepsReferencePositionsAndFitsLloydLevels(int bits)
    {
        var payload = TestAdapters.Gpt2Lora(layers: 1, d: 32, rank: 4, seed: 7);
        var options = new CodecOptions { Codec = AdapterCodec.ComPeft, ComPeft = new() { Density = 0.3, Scope = ThresholdScope.PerTensor, Alpha = AlphaMode.Tensor, MagnitudeBits = bits } };
        var decoded = AdapterContainer.Decode(AdapterContainer.Encode(payload, options));
        foreach (var t in payload.Tensors)
        {
            var reference = ComPeftReference.Apply(t.Data, 0.3, 1.0, out _);
            var d = decoded.Find(t.Name)!.Data;
            for (int i = 0; i < d.Length; i++) Assert.Equal(MathF.Sign(reference[i]), MathF.Sign(d[i]));
            var levels = d.Where(v => v != 0).Select(MathF.Abs).Distinct().OrderBy(x => x).ToArray();
            Assert.InRange(levels.Length, 1, 1 << bits);
            // Lloyd fixed point: every value sits at its nearest level, and each level is the mean of its values.
            var members = Enumerable.Range(0, d.Length).Where(i => d[i] != 0).GroupBy(i => MathF.Abs(d[i]));
            foreach (var g in members)
            {
                Assert.Equal(g.Key, g.Average(i => (double)MathF.Abs(t.Data[i])), 1e-4 * g.Key);
                foreach (int i in g) Assert.Equal(g.Key, levels.MinBy(l => Math.Abs(l - MathF.Abs(t.Data[i]))));
            }
        }
    }

    [Fact]
    public void QualityProxy_SplitsErrorLikeDenseSvd()
    {
        // Truncating to the top component loses exactly the other components' energy, all of it "aligned".
        var payload = TestAdapters.Gpt2Lora(layers: 1, d: 16, rank: 3, seed: 10);
        var original = AdapterMaterializer.Materialize(payload);
        var truncated = AdapterMaterializer.Materialize(SvdBasis.Apply(payload, 1e-9));
        var proxy = QualityProxy.Compute(original, truncated);
        double lost = 0;
        foreach (var m in original.Modules)
        {
            var s2 = LowRankTests.SquaredSingularValues(LowRankTests.Dense(m.A, m.B, m.Rank, m.InFeatures, m.OutFeatures, m.Scale), m.OutFeatures, m.InFeatures);
            lost += s2.Skip(1).Sum() / s2.Sum() / original.Modules.Count; // each module's share, modules weighted equally
        }
        Assert.Equal(lost, proxy.Aligned, 1e-6);
        Assert.Equal(0, proxy.Noise, 1e-6);

        // Random noise on the factors is mostly "noise", and the split adds up to the dense error.
        var rng = new Random(3);
        var noisy = new LoraAdapter(original.SourceKind, original.Architecture, original.Modules
            .Select(m => m with { A = m.A.Select(x => x + 0.3f * (float)TestAdapters.Gaussian(rng, 1, 0.02)[0]).ToArray() }).ToList());
        var p2 = QualityProxy.Compute(original, noisy);
        double mean = original.Modules.Average(m => Math.Pow(RelativeDenseError(m, noisy.Find(m.Layer, m.Module)), 2));
        Assert.Equal(mean, p2.Aligned + p2.Noise, 1e-6);
        Assert.True(p2.Noise > 3 * p2.Aligned, $"aligned {p2.Aligned}, noise {p2.Noise}");
    }
}
