namespace Serving.Inference.Graphs;

/// <summary>How the engine stores the projection weights of the generated graphs.</summary>
public enum WeightFormat
{
    /// <summary>fp32 as the checkpoint gives them (after conversion from fp16/bf16).</summary>
    Fp32,

    /// <summary>8-bit blocks, symmetric (one fp32 scale per block, zero point 128), run by <c>com.microsoft::MatMulNBits</c>.</summary>
    Int8,

    /// <summary>4-bit blocks with a scale and a 4-bit zero point per block (min/max), run by <c>com.microsoft::MatMulNBits</c>.</summary>
    Int4,
}

/// <summary>
/// One projection in <c>MatMulNBits</c>'s layout: the weight W [K, N] (MatMul's [in, out]) quantised along K in blocks of
/// <see cref="BlockSize"/>, stored per output column: <see cref="Data"/> [N, blocks, BlockSize·bits/8] (4-bit: two values
/// per byte, the even index in the low nibble), <see cref="Scales"/> [N·blocks], <see cref="ZeroPoints"/> (4-bit:
/// [N·⌈blocks/2⌉], two per byte, the even block in the low nibble; null for 8-bit, whose zero point is 128).
/// Dequantised: W[k, n] = (q − zp) · scale of (n, k / BlockSize). A last partial block is padded with its zero point.
/// </summary>
public sealed class QuantizedWeight
{
    public required int K { get; init; }
    public required int N { get; init; }
    public required int Bits { get; init; }
    public required int BlockSize { get; init; }
    public required byte[] Data { get; init; }
    public required float[] Scales { get; init; }
    public byte[]? ZeroPoints { get; init; }

    /// <summary>Blocks per column: ⌈K / BlockSize⌉.</summary>
    public int Blocks => (K + BlockSize - 1) / BlockSize;

    /// <summary>Bytes of one block of one column.</summary>
    public int BlobSize => BlockSize * Bits / 8;

    /// <summary>Bytes this form keeps (values, scales, zero points).</summary>
    public long Bytes => Data.LongLength + Scales.LongLength * sizeof(float) + (ZeroPoints?.LongLength ?? 0);
}

/// <summary>
/// Round-to-nearest block quantisation of projection weights for <c>MatMulNBits</c> (see <see cref="QuantizedWeight"/>
/// for the layout). 8-bit: symmetric, scale = max|w| / 127 per block. 4-bit: asymmetric, scale = (max − min) / 15 and a
/// zero point per block, so each block uses all 16 levels (the range always contains 0, so zeros stay exact).
/// </summary>
public static class WeightQuantizer
{
    /// <summary>Bits per value of <paramref name="format"/> (0 for fp32).</summary>
    public static int Bits(WeightFormat format) => format switch
    {
        WeightFormat.Int8 => 8,
        WeightFormat.Int4 => 4,
        _ => 0,
    };

    /// <summary>
    /// Quantises W. <paramref name="transposed"/>: false when <paramref name="weight"/> is [K, N] row-major (MatMul's
    /// [in, out]); true when it is [N, K] (PyTorch's [out, in], e.g. an LM head [V, d]).
    /// </summary>
    public static QuantizedWeight Quantize(ReadOnlySpan<float> weight, int k, int n, WeightFormat format, int blockSize, bool transposed = false)
    {
        var bits = Bits(format);
        if (bits == 0) throw new ArgumentException("fp32 is not a quantised format", nameof(format));
        if (blockSize < 16 || (blockSize & (blockSize - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(blockSize), blockSize, "block size must be a power of two ≥ 16");
        }
        if ((long)k * n != weight.Length) throw new ArgumentException($"{weight.Length} values for [{k}, {n}]", nameof(weight));
        var blocks = (k + blockSize - 1) / blockSize;
        var blob = blockSize * bits / 8;
        var data = new byte[(long)n * blocks * blob];
        var scales = new float[(long)n * blocks];
        var zeroPoints = bits == 4 ? new byte[(long)n * ((blocks + 1) / 2)] : null;
        var column = new float[blockSize];
        for (var col = 0; col < n; col++)
        {
            for (var b = 0; b < blocks; b++)
            {
                var start = b * blockSize;
                var count = Math.Min(blockSize, k - start);
                for (var i = 0; i < count; i++)
                {
                    column[i] = transposed ? weight[col * k + start + i] : weight[(start + i) * n + col];
                }
                var block = data.AsSpan((int)(((long)col * blocks + b) * blob), blob);
                var s = (long)col * blocks + b;
                if (bits == 8)
                {
                    scales[s] = QuantizeSymmetric8(column.AsSpan(0, count), block);
                }
                else
                {
                    scales[s] = QuantizeAsymmetric4(column.AsSpan(0, count), block, out var zp);
                    var zpIndex = (long)col * ((blocks + 1) / 2) + b / 2;
                    zeroPoints![zpIndex] |= (byte)((b & 1) == 0 ? zp : zp << 4);
                }
            }
        }
        return new QuantizedWeight { K = k, N = n, Bits = bits, BlockSize = blockSize, Data = data, Scales = scales, ZeroPoints = zeroPoints };
    }

    private static float QuantizeSymmetric8(ReadOnlySpan<float> values, Span<byte> block)
    {
        var amax = 0f;
        foreach (var v in values) amax = Math.Max(amax, Math.Abs(v));
        var scale = amax / 127f;
        var inverse = scale == 0 ? 0 : 1f / scale;
        block.Fill(128); // padding: the zero point
        for (var i = 0; i < values.Length; i++)
        {
            var q = (int)MathF.Round(values[i] * inverse, MidpointRounding.ToEven);
            block[i] = (byte)(Math.Clamp(q, -127, 127) + 128);
        }
        return scale;
    }

    private static float QuantizeAsymmetric4(ReadOnlySpan<float> values, Span<byte> block, out int zeroPoint)
    {
        float min = 0, max = 0; // the range holds 0: exact zeros, and a zero point in [0, 15]
        foreach (var v in values)
        {
            min = Math.Min(min, v);
            max = Math.Max(max, v);
        }
        var scale = (max - min) / 15f;
        var inverse = scale == 0 ? 0 : 1f / scale;
        zeroPoint = scale == 0 ? 8 : Math.Clamp((int)MathF.Round(-min * inverse, MidpointRounding.ToEven), 0, 15);
        block.Fill((byte)(zeroPoint | zeroPoint << 4)); // padding: the zero point
        for (var i = 0; i < values.Length; i++)
        {
            var q = Math.Clamp((int)MathF.Round(values[i] * inverse, MidpointRounding.ToEven) + zeroPoint, 0, 15);
            ref var cell = ref block[i / 2];
            cell = (i & 1) == 0 ? (byte)((cell & 0xF0) | q) : (byte)((cell & 0x0F) | q << 4);
        }
        return scale;
    }

    /// <summary>W [K, N] (MatMul's orientation) as the quantised form computes it, in fp32.</summary>
    public static float[] Dequantize(QuantizedWeight w)
    {
        var result = new float[(long)w.K * w.N];
        var blocks = w.Blocks;
        for (var col = 0; col < w.N; col++)
        {
            for (var k = 0; k < w.K; k++)
            {
                var b = k / w.BlockSize;
                var s = (long)col * blocks + b;
                var offset = ((long)col * blocks + b) * w.BlobSize;
                int q, zp;
                var i = k % w.BlockSize;
                if (w.Bits == 8)
                {
                    q = w.Data[offset + i];
                    zp = 128;
                }
                else
                {
                    var cell = w.Data[offset + i / 2];
                    q = (i & 1) == 0 ? cell & 0x0F : cell >> 4;
                    var z = w.ZeroPoints![(long)col * ((blocks + 1) / 2) + b / 2];
                    zp = (b & 1) == 0 ? z & 0x0F : z >> 4;
                }
                result[(long)k * w.N + col] = (q - zp) * w.Scales[s];
            }
        }
        return result;
    }
}
