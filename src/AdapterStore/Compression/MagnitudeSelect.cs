namespace Serving.AdapterStore.Compression;

/// <summary>
/// Order statistics of magnitudes by radix selection on their IEEE bits: for non-negative floats the unsigned bit
/// pattern orders like the value, so the k-th smallest |x| is found digit by digit (11, 11, 10 bits) from counts,
/// in three linear passes and without reordering or copying the input.
/// </summary>
internal static class MagnitudeSelect
{
    private static readonly int[] Shifts = [21, 10, 0];
    private static readonly int[] Widths = [11, 11, 10];

    /// <summary>The k-th smallest (0-based) of |values[i]|; NaN-free input assumed (−0 counts as 0).</summary>
    public static float KthSmallestMagnitude(ReadOnlySpan<float> values, long k)
    {
        if (k < 0 || k >= values.Length) throw new ArgumentOutOfRangeException(nameof(k), k, $"k must be in [0, {values.Length})");
        uint prefix = 0, prefixMask = 0;
        var counts = new long[1 << 11];
        for (int d = 0; d < Shifts.Length; d++)
        {
            int shift = Shifts[d];
            uint digitMask = (1u << Widths[d]) - 1;
            Array.Clear(counts);
            foreach (float v in values)
            {
                uint bits = BitConverter.SingleToUInt32Bits(v) & 0x7FFFFFFFu;
                if ((bits & prefixMask) == prefix) counts[(bits >> shift) & digitMask]++;
            }
            uint digit = 0;
            while (k >= counts[digit])
            {
                k -= counts[digit];
                digit++;
            }
            prefix |= digit << shift;
            prefixMask |= digitMask << shift;
        }
        return BitConverter.UInt32BitsToSingle(prefix);
    }
}
