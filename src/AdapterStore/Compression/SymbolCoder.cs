namespace Serving.AdapterStore.Compression;

/// <summary>
/// Integer symbols through the range coder, binarised as: is-zero, sign (a direct bit), then |q| − 1 in unary up to
/// <see cref="UnaryLimit"/> and Exp-Golomb beyond. Every binary decision has an adaptive probability per
/// <em>class</em>: symbols of one rank component share a class chosen by the encoder from their spread
/// (<see cref="ClassOf"/>), so components of similar width train the same model and each component's own
/// distribution is coded close to its entropy.
/// </summary>
internal static class SymbolCoder
{
    /// <summary>Number of classes.</summary>
    public const int Classes = 64;
    private const int UnaryLimit = 14;
    private const int ContextsPerClass = 1 + UnaryLimit;
    private const int MaxExpGolombBits = 16;

    /// <summary>The class of a run of symbols: about 4·log₂ of their RMS, clamped to [0, 63].</summary>
    public static byte ClassOf(ReadOnlySpan<int> symbols)
    {
        double ss = 0;
        foreach (int q in symbols) ss += (double)q * q;
        double rms = symbols.Length == 0 ? 0 : Math.Sqrt(ss / symbols.Length);
        return (byte)Math.Clamp((int)Math.Round(4 * Math.Log2(rms + 1.0 / 32)) + 20, 0, Classes - 1);
    }

    public static ushort[] NewModel()
    {
        var model = new ushort[Classes * ContextsPerClass];
        Array.Fill(model, RangeEncoder.HalfProbability);
        return model;
    }

    public static void Encode(RangeEncoder rc, ushort[] model, int cls, int q)
    {
        int ctx = cls * ContextsPerClass;
        rc.Encode(ref model[ctx], q == 0 ? 0 : 1);
        if (q == 0) return;
        rc.EncodeDirect(q < 0 ? 1u : 0u, 1);
        int m = Math.Abs(q) - 1;
        for (int j = 0; j < UnaryLimit; j++)
        {
            int more = m > j ? 1 : 0;
            rc.Encode(ref model[ctx + 1 + j], more);
            if (more == 0) return;
        }
        // m ≥ UnaryLimit: Exp-Golomb order 0 of m − UnaryLimit with direct bits.
        uint rest = (uint)(m - UnaryLimit) + 1;
        int bits = 32 - System.Numerics.BitOperations.LeadingZeroCount(rest);
        rc.EncodeDirect((1u << (bits - 1)) - 1, bits - 1);
        rc.EncodeDirect(0, 1);
        rc.EncodeDirect(rest, bits - 1);
    }

    public static int Decode(ref RangeDecoder rc, ushort[] model, int cls)
    {
        int ctx = cls * ContextsPerClass;
        if (rc.Decode(ref model[ctx]) == 0) return 0;
        bool negative = rc.DecodeDirect(1) != 0;
        int m = 0;
        while (m < UnaryLimit && rc.Decode(ref model[ctx + 1 + m]) != 0) m++;
        if (m == UnaryLimit)
        {
            int prefix = 0;
            while (rc.DecodeDirect(1) != 0)
            {
                if (++prefix >= MaxExpGolombBits) throw new ContainerFormatException("Symbol stream holds an impossibly large value.");
            }
            uint rest = (1u << prefix) | rc.DecodeDirect(prefix);
            m = UnaryLimit + (int)rest - 1;
        }
        int magnitude = m + 1;
        return negative ? -magnitude : magnitude;
    }
}
