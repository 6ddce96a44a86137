using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.CompilerServices;

namespace Serving.AdapterStore.Compression;

/// <summary>
/// <see cref="AdapterCodec.ComPeft"/> in a container: per group (all A / all B tensors, or each tensor) the kept
/// positions (<see cref="PositionCode"/>), one sign bit per kept value and the magnitude. A kept value decodes to
/// <c>sign · scale[component] · (k &gt; 0 ? levels[code] : α)</c>, where scale is 1 unless α is per component and the
/// k-bit codes index a per-group codebook. The reference (α = factor·σ, ternary, uploaded factors) writes exactly the
/// format-v1 fields.
/// </summary>
internal static class ComPeftCodec
{
    private const int LloydIterations = 25;

    public static ContainerHeader Encode(AdapterPayload payload, ComPeftOptions options, MemoryStream body)
    {
        if (options.Basis == FactorBasis.Svd) payload = SvdBasis.Apply(payload, options.Energy);
        var tensorEntries = new List<TensorEntry>();
        var groups = new List<GroupEntry>();
        foreach (var t in payload.Tensors) _ = AdapterContainer.GroupOf(t.Name);
        var plan = options.Scope == ThresholdScope.Global
            ? new[] { "A", "B" }.Select(g => (Name: g, Members: payload.Tensors.Where(t => AdapterContainer.GroupOf(t.Name) == g).ToList())).ToList()
            : payload.Tensors.Select((t, i) => (Name: "t" + i.ToString(CultureInfo.InvariantCulture), Members: new List<AdapterTensor> { t })).ToList();
        foreach (var (g, members) in plan)
        {
            long n = members.Sum(t => t.ElementCount);
            if (n > int.MaxValue) throw new ArgumentException($"Group {g} has {n} elements; at most {int.MaxValue} are supported.");
            var flat = new float[n];
            int offset = 0;
            foreach (var t in members)
            {
                t.Data.CopyTo(flat, offset);
                tensorEntries.Add(new TensorEntry(t.Name, t.Shape, t.SourceType, g, offset, t.Data.Length));
                offset += t.Data.Length;
            }
            var ternary = ComPeft.Ternarize(flat, options);
            var positions = PositionCode.Encode(ternary.Positions, ternary.Count);
            var signs = new byte[(ternary.Positions.Length + 7) / 8];
            for (int i = 0; i < ternary.Negative.Length; i++)
            {
                if (ternary.Negative[i]) signs[i >> 3] |= (byte)(1 << (i & 7));
            }
            long posOffset = body.Position;
            body.Write(positions.Bytes);
            long signOffset = body.Position;
            body.Write(signs);
            var entry = new GroupEntry(g, ternary.Count, options.Density, options.Factor, ternary.Sigma, ternary.Alpha, ternary.Threshold,
                ternary.Positions.Length, positions.Coding, positions.RiceParameter, posOffset, positions.Bytes.Length, positions.BitLength,
                signOffset, signs.Length);
            if (!options.IsReference) entry = Magnitudes(entry, flat, ternary.Positions, options, members.Count == 1 ? members[0] : null, body);
            groups.Add(entry);
        }
        return new ContainerHeader(AdapterCodec.ComPeft, payload.Manifest, tensorEntries, groups, null);
    }

    /// <summary>Fits α (per group or per component) and, with k &gt; 0, a 2^k-level codebook (Lloyd–Max), writing their sections.</summary>
    private static GroupEntry Magnitudes(GroupEntry g, float[] flat, int[] positions, ComPeftOptions options, AdapterTensor? tensor, MemoryStream body)
    {
        int kept = positions.Length;
        var magnitude = new double[kept];
        for (int j = 0; j < kept; j++) magnitude[j] = Math.Abs(flat[positions[j]]);
        int components = 0;
        var scaleBits = Array.Empty<ushort>();
        if (options.Alpha == AlphaMode.Component)
        {
            var t = tensor ?? throw new ArgumentException("α per component needs per-tensor scope.");
            components = ComponentsOf(t.Name, t.Shape);
            var sum = new double[components];
            var count = new int[components];
            for (int j = 0; j < kept; j++)
            {
                int c = ComponentOf(t.Name, t.Shape, positions[j]);
                sum[c] += magnitude[j];
                count[c]++;
            }
            scaleBits = new ushort[components];
            var scale = new float[components];
            for (int c = 0; c < components; c++)
            {
                scale[c] = count[c] == 0 ? 0f : Bf16.Nearest((float)(sum[c] / count[c]));
                scaleBits[c] = Bf16.ToBits(scale[c]);
            }
            for (int j = 0; j < kept; j++)
            {
                float s = scale[ComponentOf(t.Name, t.Shape, positions[j])];
                magnitude[j] = s == 0 ? 0 : magnitude[j] / s;
            }
        }
        float alpha = options.Alpha == AlphaMode.Sigma ? g.Alpha : options.Alpha == AlphaMode.Component ? 1f : (float)(kept == 0 ? 0 : magnitude.Average());
        float[]? levels = null;
        byte[] codesBytes = [];
        long codeBits = 0;
        if (options.MagnitudeBits > 0)
        {
            var (fitted, codes) = LloydMax(magnitude, 1 << options.MagnitudeBits);
            levels = fitted;
            var writer = new BitWriter(kept * options.MagnitudeBits / 8 + 16);
            foreach (int code in codes) writer.WriteBits((ulong)code, options.MagnitudeBits);
            codesBytes = writer.ToArray();
            codeBits = writer.BitCount;
        }
        long scalesOffset = body.Position;
        var scaleBytes = new byte[2 * scaleBits.Length];
        for (int c = 0; c < scaleBits.Length; c++) BinaryPrimitives.WriteUInt16LittleEndian(scaleBytes.AsSpan(2 * c), scaleBits[c]);
        body.Write(scaleBytes);
        long codesOffset = body.Position;
        body.Write(codesBytes);
        return g with
        {
            Alpha = alpha, AlphaMode = options.Alpha, MagnitudeBits = options.MagnitudeBits, Levels = levels, Components = components,
            ScalesOffset = scalesOffset, ScalesLength = 2L * components, MagnitudesOffset = codesOffset, MagnitudesLength = codesBytes.Length,
            MagnitudesBits = codeBits,
        };
    }

    /// <summary>1-D k-means on the kept magnitudes from quantile starts; returns the levels (ascending) and each value's code.</summary>
    internal static (float[] Levels, int[] Codes) LloydMax(double[] values, int count)
    {
        var sorted = (double[])values.Clone();
        Array.Sort(sorted);
        var levels = new double[count];
        for (int i = 0; i < count; i++) levels[i] = sorted.Length == 0 ? 0 : sorted[Math.Min(sorted.Length - 1, (int)((i + 0.5) * sorted.Length / count))];
        for (int iter = 0; iter < LloydIterations; iter++)
        {
            var sum = new double[count];
            var n = new int[count];
            int l = 0;
            foreach (double v in sorted)
            {
                while (l + 1 < count && v > (levels[l] + levels[l + 1]) / 2) l++;
                sum[l] += v;
                n[l]++;
            }
            for (int i = 0; i < count; i++)
            {
                if (n[i] > 0) levels[i] = sum[i] / n[i];
            }
            Array.Sort(levels);
        }
        var result = levels.Select(v => (float)v).ToArray();
        var codes = new int[values.Length];
        for (int j = 0; j < values.Length; j++)
        {
            int best = 0;
            for (int i = 1; i < count; i++)
            {
                if (Math.Abs(values[j] - result[i]) < Math.Abs(values[j] - result[best])) best = i;
            }
            codes[j] = best;
        }
        return (result, codes);
    }

    /// <summary>Rank components of a LoRA tensor: rows of A [r, in], columns of B [out, r].</summary>
    internal static int ComponentsOf(string name, long[] shape) => (int)(AdapterContainer.GroupOf(name) == "A" ? shape[0] : shape[1]);

    internal static int ComponentOf(string name, long[] shape, int index) =>
        AdapterContainer.GroupOf(name) == "A" ? index / (int)shape[1] : index % (int)shape[1];

    public static List<AdapterTensor> Decode(ContainerHeader header, ReadOnlySpan<byte> body)
    {
        if (header.Groups is null) throw new ContainerFormatException("ComPEFT container without groups.");
        var result = new List<AdapterTensor>(header.Tensors.Count);
        foreach (var g in header.Groups)
        {
            var members = header.Tensors.Where(t => t.Group == g.Name).ToList();
            long expected = 0;
            var arrays = new float[members.Count][];
            var starts = new int[members.Count];
            for (int i = 0; i < members.Count; i++)
            {
                var t = members[i];
                long elements = AdapterContainer.CheckShape(t);
                if (t.Offset != expected) throw new ContainerFormatException($"Tensor '{t.Name}' starts at {t.Offset}, expected {expected} in group {g.Name}.");
                arrays[i] = new float[elements];
                starts[i] = (int)expected;
                expected += elements;
            }
            if (expected != g.Count) throw new ContainerFormatException($"Group {g.Name} declares {g.Count} elements, its tensors hold {expected}.");
            if (g.Kept < 0 || g.Kept > g.Count) throw new ContainerFormatException($"Group {g.Name} declares {g.Kept} kept of {g.Count}.");
            var posBytes = AdapterContainer.Section(body, g.PositionsOffset, g.PositionsLength, $"group {g.Name} positions");
            var signBytes = AdapterContainer.Section(body, g.SignsOffset, g.SignsLength, $"group {g.Name} signs");
            if (signBytes.Length < (g.Kept + 7) / 8) throw new ContainerFormatException($"Group {g.Name} sign section too short.");
            var positions = new int[g.Kept];
            PositionCode.Decode(g.PositionCoding, g.RiceParameter, posBytes, g.PositionsBits, g.Count, positions);
            Scatter(positions, signBytes, MagnitudesOf(g, members, body), arrays, starts);
            for (int i = 0; i < members.Count; i++)
            {
                result.Add(new AdapterTensor(members[i].Name, members[i].Shape, arrays[i], members[i].SourceType));
            }
        }
        if (result.Count != header.Tensors.Count) throw new ContainerFormatException("Some tensors belong to no group.");
        return result;
    }

    /// <summary>
    /// What a group's kept values are made of: the magnitude of kept value j at group position p is
    /// <c>scale[component(p)] · (levels is null ? α : levels[codes[j]])</c>, scale 1 without per-component scales; the
    /// component of p is its row (A: p / columns) or its column (B: p % columns).
    /// </summary>
    private sealed record MagnitudeTables(float Alpha, float[]? Scales, bool ComponentIsRow, int Columns, float[]? Levels, int[]? Codes);

    /// <summary>
    /// Writes each kept value (sign · magnitude) at its position, tensor by tensor. A node runs this loop (235,000 values
    /// for a rank-16 gpt2-small adapter) a few times a second at most, too rarely for the tiered JIT to promote it
    /// promptly in a process that keeps compiling other code, so it is compiled optimised on first call, like
    /// <see cref="PositionCode.Decode"/> (docs/benchmarks.md, cold activation).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Scatter(int[] positions, ReadOnlySpan<byte> signBytes, MagnitudeTables magnitudes, float[][] arrays, int[] starts)
    {
        if (arrays.Length == 0) return;
        var (alpha, scales, byRow, columns, levels, codes) = magnitudes;
        int ti = 0;
        int tensorEnd = starts[0] + arrays[0].Length;
        for (int j = 0; j < positions.Length; j++)
        {
            int p = positions[j];
            while (p >= tensorEnd)
            {
                ti++;
                tensorEnd = starts[ti] + arrays[ti].Length;
            }
            float m = levels is null ? alpha : levels[codes![j]];
            if (scales is not null) m = scales[byRow ? p / columns : p % columns] * m;
            bool negative = ((signBytes[j >> 3] >> (j & 7)) & 1) != 0;
            arrays[ti][p - starts[ti]] = negative ? -m : m;
        }
    }

    /// <summary>A group's magnitude tables: α (v1), or per-component scales and a codebook with per-value codes (v2 extensions).</summary>
    private static MagnitudeTables MagnitudesOf(GroupEntry g, List<TensorEntry> members, ReadOnlySpan<byte> body)
    {
        float alpha = g.Alpha;
        if (g.MagnitudeBits == 0 && g.Components == 0) return new MagnitudeTables(alpha, null, false, 1, null, null);
        float[]? scales = null;
        var byRow = false;
        var columns = 1;
        if (g.Components > 0)
        {
            if (members.Count != 1) throw new ContainerFormatException($"Group {g.Name} has per-component scales but {members.Count} tensors.");
            var tensor = members[0];
            if (tensor.Shape.Length != 2 || g.Components != ComponentsOf(tensor.Name, tensor.Shape))
                throw new ContainerFormatException($"Group {g.Name} declares {g.Components} components for a tensor of shape [{string.Join(", ", tensor.Shape)}].");
            var bytes = AdapterContainer.Section(body, g.ScalesOffset, g.ScalesLength, $"group {g.Name} scales");
            if (bytes.Length != 2L * g.Components) throw new ContainerFormatException($"Group {g.Name} scale section is {bytes.Length} bytes, expected {2 * g.Components}.");
            scales = new float[g.Components];
            for (int c = 0; c < scales.Length; c++) scales[c] = Bf16.FromBits(BinaryPrimitives.ReadUInt16LittleEndian(bytes[(2 * c)..]));
            byRow = AdapterContainer.GroupOf(tensor.Name) == "A"; // as ComponentOf: rows of A, columns of B
            columns = (int)tensor.Shape[1];
        }
        int[]? codes = null;
        float[]? levels = null;
        if (g.MagnitudeBits > 0)
        {
            if (g.MagnitudeBits > 4 || g.Levels is null || g.Levels.Length != 1 << g.MagnitudeBits)
                throw new ContainerFormatException($"Group {g.Name}: {g.MagnitudeBits} magnitude bits need {1 << Math.Clamp(g.MagnitudeBits, 0, 4)} levels.");
            levels = g.Levels;
            if (g.MagnitudesBits != (long)g.Kept * g.MagnitudeBits) throw new ContainerFormatException($"Group {g.Name} magnitude codes hold {g.MagnitudesBits} bits, expected {(long)g.Kept * g.MagnitudeBits}.");
            var reader = new BitReader(AdapterContainer.Section(body, g.MagnitudesOffset, g.MagnitudesLength, $"group {g.Name} magnitudes"), g.MagnitudesBits);
            codes = new int[g.Kept];
            ReadCodes(ref reader, g.MagnitudeBits, codes);
        }
        return new MagnitudeTables(alpha, scales, byRow, columns, levels, codes);
    }

    /// <summary>The k-bit magnitude codes of a group, one per kept value (optimised on first call, as <see cref="Scatter"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ReadCodes(ref BitReader reader, int bits, int[] codes)
    {
        for (int j = 0; j < codes.Length; j++) codes[j] = (int)reader.ReadBits(bits);
    }
}
