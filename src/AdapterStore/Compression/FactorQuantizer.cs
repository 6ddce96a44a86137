namespace Serving.AdapterStore.Compression;

/// <summary>
/// One module's factors quantised per rank component: A row c is <c>SymbolsA[c, :]·StepsA[c]</c>, B column c is
/// <c>SymbolsB[:, c]·StepsB[c]</c>, and the update is <c>Scale·B̂·Â</c>. Steps are bfloat16 values (stored in 2 bytes).
/// </summary>
internal sealed record QuantizedModule(int Rank, int InFeatures, int OutFeatures, float Scale, float[] StepsA, float[] StepsB, int[] SymbolsA, int[] SymbolsB)
{
    /// <summary>The dequantised factors (A [Rank, in], B [out, Rank]).</summary>
    public (float[] A, float[] B) Dequantize()
    {
        var a = new float[Rank * InFeatures];
        var b = new float[OutFeatures * Rank];
        for (int c = 0; c < Rank; c++)
        {
            for (int i = 0; i < InFeatures; i++) a[c * InFeatures + i] = SymbolsA[c * InFeatures + i] * StepsA[c];
        }
        for (int o = 0; o < OutFeatures; o++)
        {
            for (int c = 0; c < Rank; c++) b[o * Rank + c] = SymbolsB[o * Rank + c] * StepsB[c];
        }
        return (a, b);
    }
}

/// <summary>
/// Uniform scalar quantisation of LoRA factors with one step per rank component and factor. Two ways to set steps:
/// <list type="bullet">
/// <item>fixed bits: step = max|x| / (2^(k−1) − 1) over the component's row of A (column of B), symbols in ±(2^(k−1) − 1);</item>
/// <item>error-weighted: an entry of A row c moves ΔW by |s|·‖B[:, c]‖ per unit, one of B column c by |s|·‖A[c, :]‖, so
/// steps <c>δ / (|s|·‖B[:, c]‖)</c> and <c>δ / (|s|·‖A[c, :]‖)</c> give every entry the same weighted noise δ²/12 (the
/// rate-optimal allocation for entropy-coded uniform quantisation); a component whose removal costs less error than
/// its bits are worth at that slope (λ = 2·ln2·δ²/12 per bit) is dropped.</item>
/// </list>
/// </summary>
internal static class FactorQuantizer
{
    /// <summary>Largest symbol magnitude (symbols are stored as zig-zag 16-bit values).</summary>
    public const int MaxSymbol = 32767;


    /// <summary>Quantises with <paramref name="bits"/> bits per value (2–8), step from each component's largest magnitude.</summary>
    public static QuantizedModule FixedBits(float[] a, float[] b, int rank, int inF, int outF, float scale, int bits)
    {
        int levels = (1 << (bits - 1)) - 1;
        var stepsA = new float[rank];
        var stepsB = new float[rank];
        for (int c = 0; c < rank; c++)
        {
            float maxA = 0, maxB = 0;
            for (int i = 0; i < inF; i++) maxA = Math.Max(maxA, Math.Abs(a[c * inF + i]));
            for (int o = 0; o < outF; o++) maxB = Math.Max(maxB, Math.Abs(b[o * rank + c]));
            stepsA[c] = StepFor(maxA / levels, maxA, levels);
            stepsB[c] = StepFor(maxB / levels, maxB, levels);
        }
        return Quantize(a, b, rank, inF, outF, scale, stepsA, stepsB);
    }

    /// <summary>Error-weighted steps at noise level <paramref name="delta"/>, dropping components not worth their bits.</summary>
    public static QuantizedModule Weighted(float[] a, float[] b, int rank, int inF, int outF, float scale, double delta, double dropWeight = 1)
    {
        var normA = new double[rank];
        var normB = new double[rank];
        for (int c = 0; c < rank; c++)
        {
            for (int i = 0; i < inF; i++) normA[c] += (double)a[c * inF + i] * a[c * inF + i];
            for (int o = 0; o < outF; o++) normB[c] += (double)b[o * rank + c] * b[o * rank + c];
            normA[c] = Math.Sqrt(normA[c]);
            normB[c] = Math.Sqrt(normB[c]);
        }
        var stepsA = new float[rank];
        var stepsB = new float[rank];
        double s = Math.Abs(scale);
        for (int c = 0; c < rank; c++)
        {
            float maxA = 0, maxB = 0;
            for (int i = 0; i < inF; i++) maxA = Math.Max(maxA, Math.Abs(a[c * inF + i]));
            for (int o = 0; o < outF; o++) maxB = Math.Max(maxB, Math.Abs(b[o * rank + c]));
            stepsA[c] = normB[c] == 0 ? 0 : StepFor(delta / (s * normB[c]), maxA, MaxSymbol);
            stepsB[c] = normA[c] == 0 ? 0 : StepFor(delta / (s * normA[c]), maxB, MaxSymbol);
        }
        var q = Quantize(a, b, rank, inF, outF, scale, stepsA, stepsB);

        // Keep a component when the error it removes is worth its bits at the slope of the rest.
        double lambda = 2 * Math.Log(2) * delta * delta / 12;
        var keep = new List<int>(rank);
        for (int c = 0; c < rank; c++)
        {
            if (stepsA[c] == 0 || stepsB[c] == 0) continue;
            double dropError = s * s * normA[c] * normA[c] * normB[c] * normB[c];
            double residualA = 0, residualB = 0;
            for (int i = 0; i < inF; i++)
            {
                double e = a[c * inF + i] - q.SymbolsA[c * inF + i] * (double)stepsA[c];
                residualA += e * e;
            }
            for (int o = 0; o < outF; o++)
            {
                double e = b[o * rank + c] - q.SymbolsB[o * rank + c] * (double)stepsB[c];
                residualB += e * e;
            }
            double keepError = s * s * (normB[c] * normB[c] * residualA + normA[c] * normA[c] * residualB);
            double bits = EntropyBits(q.SymbolsA.AsSpan(c * inF, inF)) + EntropyBitsStrided(q.SymbolsB, c, rank, outF);
            if (dropWeight * dropError - keepError > lambda * bits) keep.Add(c);
        }
        var kept = keep.Count == rank ? q : Select(q, keep);
        Debias(a, kept, keep, rank, dropWeight, isA: true);
        Debias(b, kept, keep, rank, dropWeight, isA: false);
        return kept;
    }

    /// <summary>
    /// Rescales each kept component's step by the gain g that minimises W·(lost signal)² + (other error)² of that
    /// factor: with X = ‖x‖², Y = ‖x̂‖², p = ⟨x, x̂⟩, g = W·p / (Y + (W − 1)·p²/X). W = 1 is the least-squares gain;
    /// larger W undoes the shrinkage that rounding small values to zero causes, at the price of a little noise.
    /// </summary>
    private static void Debias(float[] original, QuantizedModule q, List<int> keep, int rank, double weight, bool isA)
    {
        int length = isA ? q.InFeatures : q.OutFeatures;
        var symbols = isA ? q.SymbolsA : q.SymbolsB;
        var steps = isA ? q.StepsA : q.StepsB;
        for (int j = 0; j < keep.Count; j++)
        {
            int c = keep[j];
            double x2 = 0, y2 = 0, p = 0;
            for (int i = 0; i < length; i++)
            {
                // A: row c of [rank, in] and row j of the kept symbols; B: column c of [out, rank], column j of [out, kept].
                double x = isA ? original[c * length + i] : original[i * rank + c];
                double y = (isA ? symbols[j * length + i] : symbols[i * q.Rank + j]) * (double)steps[j];
                x2 += x * x;
                y2 += y * y;
                p += x * y;
            }
            if (p <= 0 || x2 == 0) continue;
            double gain = weight * p / (y2 + (weight - 1) * p * p / x2);
            steps[j] = Bf16.Nearest((float)(steps[j] * gain));
        }
    }

    /// <summary>Σ −log₂ p(symbol) with p the symbols' own frequencies: what an ideal order-0 coder would spend.</summary>
    public static double EntropyBits(ReadOnlySpan<int> symbols)
    {
        const int Small = 64;
        Span<int> counts = stackalloc int[2 * Small + 1];
        counts.Clear();
        Dictionary<int, int>? large = null;
        foreach (int x in symbols)
        {
            if (x >= -Small && x <= Small) counts[x + Small]++;
            else
            {
                large ??= [];
                large[x] = large.GetValueOrDefault(x) + 1;
            }
        }
        double bits = 0, n = symbols.Length;
        foreach (int count in counts)
        {
            if (count > 0) bits -= count * Math.Log2(count / n);
        }
        foreach (int count in large?.Values ?? (IEnumerable<int>)[]) bits -= count * Math.Log2(count / n);
        return bits;
    }

    private static double EntropyBitsStrided(int[] symbols, int column, int stride, int rows)
    {
        var col = new int[rows];
        for (int o = 0; o < rows; o++) col[o] = symbols[o * stride + column];
        return EntropyBits(col);
    }

    /// <summary>A step no smaller than what keeps <paramref name="max"/> within ±<paramref name="maxSymbol"/>, rounded up to bfloat16.</summary>
    private static float StepFor(double step, float max, int maxSymbol)
    {
        if (max == 0) return 0;
        step = Math.Max(step, max / (double)maxSymbol);
        float rounded = Bf16.RoundUp((float)step);
        return rounded;
    }

    private static QuantizedModule Quantize(float[] a, float[] b, int rank, int inF, int outF, float scale, float[] stepsA, float[] stepsB)
    {
        var qa = new int[a.Length];
        var qb = new int[b.Length];
        for (int c = 0; c < rank; c++)
        {
            if (stepsA[c] == 0) continue;
            for (int i = 0; i < inF; i++) qa[c * inF + i] = Symbol(a[c * inF + i], stepsA[c]);
        }
        for (int o = 0; o < outF; o++)
        {
            for (int c = 0; c < rank; c++)
            {
                if (stepsB[c] != 0) qb[o * rank + c] = Symbol(b[o * rank + c], stepsB[c]);
            }
        }
        return new QuantizedModule(rank, inF, outF, scale, stepsA, stepsB, qa, qb);
    }

    private static int Symbol(float x, float step) => (int)Math.Clamp(Math.Round(x / (double)step, MidpointRounding.ToEven), -MaxSymbol, MaxSymbol);

    private static QuantizedModule Select(QuantizedModule q, List<int> keep)
    {
        int r = keep.Count, inF = q.InFeatures, outF = q.OutFeatures;
        var qa = new int[r * inF];
        var qb = new int[outF * r];
        var sa = new float[r];
        var sb = new float[r];
        for (int j = 0; j < r; j++)
        {
            int c = keep[j];
            sa[j] = q.StepsA[c];
            sb[j] = q.StepsB[c];
            Array.Copy(q.SymbolsA, c * inF, qa, j * inF, inF);
            for (int o = 0; o < outF; o++) qb[o * r + j] = q.SymbolsB[o * q.Rank + c];
        }
        return new QuantizedModule(r, inF, outF, q.Scale, sa, sb, qa, qb);
    }
}

/// <summary>bfloat16 (the top 16 bits of a float32) for steps and scales in containers.</summary>
internal static class Bf16
{
    /// <summary>The smallest bfloat16 value ≥ <paramref name="x"/> (x ≥ 0, finite).</summary>
    public static float RoundUp(float x)
    {
        uint bits = BitConverter.SingleToUInt32Bits(x);
        uint truncated = bits & 0xFFFF0000u;
        if (truncated != bits) truncated += 0x10000u;
        return BitConverter.UInt32BitsToSingle(truncated);
    }

    /// <summary>The bfloat16 value nearest to <paramref name="x"/> (ties to even).</summary>
    public static float Nearest(float x)
    {
        uint bits = BitConverter.SingleToUInt32Bits(x);
        uint rounded = bits + 0x7FFFu + ((bits >> 16) & 1);
        return BitConverter.UInt32BitsToSingle(rounded & 0xFFFF0000u);
    }

    public static ushort ToBits(float x) => (ushort)(BitConverter.SingleToUInt32Bits(x) >> 16);

    public static float FromBits(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);
}
