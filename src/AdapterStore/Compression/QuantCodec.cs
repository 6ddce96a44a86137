using System.Buffers.Binary;
using Serving.AdapterStore.Peft;

namespace Serving.AdapterStore.Compression;

/// <summary>
/// <see cref="AdapterCodec.Quant"/>: factors (as uploaded, or re-factored by <see cref="SvdBasis"/>) quantised per
/// rank component by <see cref="FactorQuantizer"/>; each component's step and symbol class go to a small zstd side
/// section, its symbols through the adaptive range coder (<see cref="SymbolCoder"/>).
/// The header's manifest is the decoded one (ranks after re-factoring and dropping, scale 1 in the SVD basis).
/// </summary>
internal static class QuantCodec
{
    private const int ZstdLevel = 19;
    private const int SearchSteps = 10;

    public static ContainerHeader Encode(AdapterPayload payload, QuantOptions options, MemoryStream body) =>
        Encode(QuantPlan.Create(payload, options.Basis, options.Energy), options, body, out _);

    /// <summary>Encodes with a prepared plan; <paramref name="reconstruction"/> is what the container decodes to.</summary>
    public static ContainerHeader Encode(QuantPlan plan, QuantOptions options, MemoryStream body, out LoraAdapter reconstruction)
    {
        var factors = plan.Factors.Modules;
        var quantized = options.Bits > 0
            ? factors.Select(m => FactorQuantizer.FixedBits(m.A, m.B, m.Rank, m.InFeatures, m.OutFeatures, m.Scale, options.Bits)).ToList()
            : options.Budget == BudgetScope.PerModule
                ? factors.Select((m, i) => SearchModule(m, plan, i, options.TargetError, options.DropWeight)).ToList()
                : SearchGlobal(plan, options.TargetError, options.DropWeight);

        var modules = new List<ModuleSpec>();
        var kept = new List<(ModuleSpec Spec, QuantizedModule Q)>();
        var decoded = new List<LoraWeights>();
        for (int i = 0; i < quantized.Count; i++)
        {
            var q = quantized[i];
            if (q.Rank == 0) continue;
            var spec = plan.Basis.Manifest.Modules[i] with { Rank = q.Rank };
            modules.Add(spec);
            kept.Add((spec, q));
            var (a, b) = q.Dequantize();
            decoded.Add(factors[i] with { Rank = q.Rank, A = a, B = b, Scale = q.Scale });
        }
        reconstruction = plan.Original with { Modules = decoded };
        return Write(plan.Payload.Manifest with { Modules = modules }, kept, body);
    }

    private static ContainerHeader Write(AdapterManifest manifest, List<(ModuleSpec Spec, QuantizedModule Q)> modules, MemoryStream body)
    {
        var entries = new List<TensorEntry>();
        var side = new MemoryStream();
        var rc = new RangeEncoder();
        var model = SymbolCoder.NewModel();
        long symbols = 0;
        foreach (var (spec, q) in modules)
        {
            string prefix = $"base_model.model.{spec.Path}";
            entries.Add(new TensorEntry($"{prefix}.lora_A.weight", [q.Rank, q.InFeatures], TensorElementType.F32, "q", symbols, q.SymbolsA.Length));
            symbols += q.SymbolsA.Length;
            entries.Add(new TensorEntry($"{prefix}.lora_B.weight", [q.OutFeatures, q.Rank], TensorElementType.F32, "q", symbols, q.SymbolsB.Length));
            symbols += q.SymbolsB.Length;
            var column = new int[q.OutFeatures];
            for (int c = 0; c < q.Rank; c++) WriteComponent(q.SymbolsA.AsSpan(c * q.InFeatures, q.InFeatures), q.StepsA[c]);
            for (int c = 0; c < q.Rank; c++)
            {
                for (int o = 0; o < q.OutFeatures; o++) column[o] = q.SymbolsB[o * q.Rank + c];
                WriteComponent(column, q.StepsB[c]);
            }
        }
        var coded = rc.Finish();
        using var compressor = new ZstdSharp.Compressor(ZstdLevel);
        var sideCompressed = compressor.Wrap(side.GetBuffer().AsSpan(0, (int)side.Length));
        long sideOffset = body.Position;
        body.Write(sideCompressed);
        long symbolsOffset = body.Position;
        body.Write(coded);
        return new ContainerHeader(AdapterCodec.Quant, manifest, entries, null, null)
        {
            Quant = new QuantEntry(sideOffset, sideCompressed.Length, side.Length, symbolsOffset, coded.Length),
        };

        void WriteComponent(ReadOnlySpan<int> values, float step)
        {
            byte cls = SymbolCoder.ClassOf(values);
            ushort bits = Bf16.ToBits(step);
            side.WriteByte((byte)bits);
            side.WriteByte((byte)(bits >> 8));
            side.WriteByte(cls);
            foreach (int v in values) SymbolCoder.Encode(rc, model, cls, v);
        }
    }

    public static List<AdapterTensor> Decode(ContainerHeader header, ReadOnlySpan<byte> body)
    {
        var q = header.Quant ?? throw new ContainerFormatException("Quant container without its section entry.");
        var side = AdapterContainer.Unzstd(AdapterContainer.Section(body, q.SideOffset, q.SideLength, "quant side section"), q.SideRawLength);
        long components = 0, symbols = 0;
        foreach (var t in header.Tensors)
        {
            long elements = AdapterContainer.CheckShape(t);
            if (t.Shape.Length != 2) throw new ContainerFormatException($"Tensor '{t.Name}' is not a matrix.");
            if (t.Offset != symbols) throw new ContainerFormatException($"Tensor '{t.Name}' symbols start at {t.Offset}, expected {symbols}.");
            components += IsA(t) ? t.Shape[0] : t.Shape[1];
            symbols += elements;
        }
        if (3 * components != side.Length) throw new ContainerFormatException($"Quant side section holds {side.Length} bytes; {components} components need {3 * components}.");
        var rc = new RangeDecoder(AdapterContainer.Section(body, q.SymbolsOffset, q.SymbolsLength, "quant symbol stream"));
        var model = SymbolCoder.NewModel();
        var result = new List<AdapterTensor>(header.Tensors.Count);
        int at = 0;
        foreach (var t in header.Tensors)
        {
            bool isA = IsA(t);
            int rows = (int)t.Shape[0], cols = (int)t.Shape[1];
            int count = isA ? rows : cols, length = isA ? cols : rows;
            var data = new float[rows * cols];
            for (int c = 0; c < count; c++, at += 3)
            {
                float step = Bf16.FromBits((ushort)(side[at] | side[at + 1] << 8));
                int cls = side[at + 2];
                if (cls >= SymbolCoder.Classes || !float.IsFinite(step)) throw new ContainerFormatException($"Tensor '{t.Name}' component {c} has class {cls}, step {step}.");
                for (int i = 0; i < length; i++) data[isA ? c * cols + i : i * cols + c] = SymbolCoder.Decode(ref rc, model, cls) * step;
            }
            result.Add(new AdapterTensor(t.Name, t.Shape, data, t.SourceType));
        }
        if (rc.Overrun > 0) throw new ContainerFormatException("Quant symbol stream ended early.");
        return result;
    }

    private static bool IsA(TensorEntry t) => AdapterContainer.GroupOf(t.Name) == "A";

    /// <summary>The coarsest step scale whose weighted module error (<see cref="QualityProxy.Weighted"/>) stays within <paramref name="target"/>.</summary>
    private static QuantizedModule SearchModule(LoraWeights m, QuantPlan plan, int i, double target, double dropWeight)
    {
        double norm2 = plan.Norms[i];
        QuantizedModule At(double d) => FactorQuantizer.Weighted(m.A, m.B, m.Rank, m.InFeatures, m.OutFeatures, m.Scale, d, dropWeight);
        if (norm2 == 0) return At(double.MaxValue / 4);
        double start = target * Math.Sqrt(norm2 * 12.0 / Math.Max(1, m.Rank * (m.InFeatures + m.OutFeatures)));
        return Bisect(start, target, d =>
        {
            var q = At(d);
            return (Math.Sqrt(WeightedSquaredError(plan, i, q) / norm2), new List<QuantizedModule> { q });
        })[0];
    }

    /// <summary>One step scale for all modules, the coarsest whose overall weighted error stays within <paramref name="target"/>.</summary>
    private static List<QuantizedModule> SearchGlobal(QuantPlan plan, double target, double dropWeight)
    {
        var modules = plan.Factors.Modules;
        double total = plan.Norms.Sum();
        long entries = modules.Sum(m => (long)m.Rank * (m.InFeatures + m.OutFeatures));
        double start = target * Math.Sqrt(total * 12.0 / Math.Max(1, entries));
        return Bisect(start, target, d =>
        {
            var qs = modules.Select(m => FactorQuantizer.Weighted(m.A, m.B, m.Rank, m.InFeatures, m.OutFeatures, m.Scale, d, dropWeight)).ToList();
            double err = 0;
            for (int i = 0; i < qs.Count; i++) err += WeightedSquaredError(plan, i, qs[i]);
            return (total == 0 ? 0 : Math.Sqrt(err / total), qs);
        });
    }

    private static List<QuantizedModule> Bisect(double start, double target, Func<double, (double Error, List<QuantizedModule> Q)> at)
    {
        double lo = start;
        var (errLo, qLo) = at(lo);
        for (int i = 0; i < 40 && errLo > target; i++) (errLo, qLo) = at(lo /= 2);
        double hi = 2 * lo;
        var (errHi, qHi) = at(hi);
        for (int i = 0; i < 40 && errHi <= target; i++)
        {
            (lo, qLo) = (hi, qHi);
            (errHi, qHi) = at(hi *= 2);
        }
        for (int i = 0; i < SearchSteps; i++)
        {
            double mid = Math.Sqrt(lo * hi);
            var (err, q) = at(mid);
            if (err <= target) (lo, qLo) = (mid, q);
            else hi = mid;
        }
        return qLo;
    }

    private static double WeightedSquaredError(QuantPlan plan, int i, QuantizedModule q)
    {
        var original = plan.Originals[i];
        LoraWeights? r = null;
        if (q.Rank > 0)
        {
            var (a, b) = q.Dequantize();
            r = original with { Rank = q.Rank, A = a, B = b, Scale = q.Scale };
        }
        var (aligned, noise, _) = QualityProxy.Module(original, plan.Svds[i], r, plan.Norms[i]);
        return QualityProxy.SignalWeight * aligned + noise;
    }
}

/// <summary>What the quantiser needs of a payload that does not depend on the target (shared by <see cref="AutoCodec"/>'s candidates).</summary>
internal sealed class QuantPlan
{
    private QuantPlan(AdapterPayload payload, AdapterPayload basis, LoraAdapter original, LoraAdapter factors, List<LoraWeights> originals, List<LowRankSvd> svds, double[] norms)
    {
        (Payload, Basis, Original, Factors, Originals, Svds, Norms) = (payload, basis, original, factors, originals, svds, norms);
    }

    /// <summary>The upload.</summary>
    public AdapterPayload Payload { get; }
    /// <summary>The payload in the quantised basis.</summary>
    public AdapterPayload Basis { get; }
    /// <summary>The upload's modules.</summary>
    public LoraAdapter Original { get; }
    /// <summary>The basis payload's modules (some may be missing after energy truncation).</summary>
    public LoraAdapter Factors { get; }
    /// <summary>Per basis module: the original module, its SVD and ‖ΔW‖².</summary>
    public List<LoraWeights> Originals { get; }
    public List<LowRankSvd> Svds { get; }
    public double[] Norms { get; }

    /// <summary><see cref="QualityProxy.Compute"/> of a reconstruction, reusing the plan's SVDs.</summary>
    public ProxyError Proxy(LoraAdapter reconstruction)
    {
        var mean = new QualityProxy.Mean();
        for (int i = 0; i < Originals.Count; i++)
        {
            var m = Originals[i];
            mean.Add(QualityProxy.Module(m, Svds[i], reconstruction.Find(m.Layer, m.Module), Norms[i]));
        }
        foreach (var m in Original.Modules)
        {
            if (Factors.Find(m.Layer, m.Module) is not null) continue;
            double norm = ReconstructionError.Inner(m, m); // dropped by the basis: all of it is lost signal
            mean.Add((norm, 0, norm));
        }
        return mean.Result;
    }

    public static QuantPlan Create(AdapterPayload payload, FactorBasis basis, double energy)
    {
        var original = AdapterMaterializer.Materialize(payload);
        var basisPayload = basis == FactorBasis.Svd ? SvdBasis.Apply(payload, energy) : payload;
        var factors = AdapterMaterializer.Materialize(basisPayload);
        var originals = factors.Modules.Select(m => original.Find(m.Layer, m.Module)!).ToList();
        return new QuantPlan(payload, basisPayload, original, factors, originals, originals.Select(LowRankSvd.Of).ToList(),
            originals.Select(o => ReconstructionError.Inner(o, o)).ToArray());
    }
}

/// <summary>
/// Where a quant container's sections lie: the side section (zstd; per component, in tensor order, A rows then B
/// columns: its step as bfloat16 and its symbol class, 3 bytes) and the range-coded symbols (same order).
/// </summary>
internal sealed record QuantEntry(long SideOffset, long SideLength, long SideRawLength, long SymbolsOffset, long SymbolsLength);
