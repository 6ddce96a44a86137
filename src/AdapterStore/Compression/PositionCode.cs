using System.Numerics;
using System.Text.Json.Serialization;

namespace Serving.AdapterStore.Compression;

/// <summary>How the kept positions of a group are coded.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<PositionCoding>))]
public enum PositionCoding
{
    /// <summary>One bit per element of the group.</summary>
    Bitmap,
    /// <summary>Golomb–Rice codes of the gaps between kept positions.</summary>
    Rice,
}

/// <summary>An encoded position stream.</summary>
internal sealed record EncodedPositions(PositionCoding Coding, int RiceParameter, byte[] Bytes, long BitLength);

/// <summary>Chooses the smaller of a bitmap and Golomb–Rice gap codes (parameter searched exactly) and codes positions with it.</summary>
internal static class PositionCode
{
    public const int MaxRiceParameter = 40;

    public static EncodedPositions Encode(ReadOnlySpan<int> positions, int count)
    {
        long bitmapBits = count;
        (int bestB, long bestBits) = BestRice(positions);
        // Rice with parameter 0 is an inverted bitmap cut at the last kept position, so it never loses by more
        // than a word; prefer the bitmap when they are that close because it decodes word-at-a-time.
        if (bitmapBits <= bestBits + 64)
        {
            var bytes = new byte[(count + 7) / 8];
            foreach (int p in positions) bytes[p >> 3] |= (byte)(1 << (p & 7));
            return new EncodedPositions(PositionCoding.Bitmap, 0, bytes, bitmapBits);
        }
        var writer = new BitWriter((int)Math.Min(int.MaxValue - 64, bestBits / 8 + 16));
        int prev = -1;
        ulong mask = bestB == 0 ? 0 : (1UL << bestB) - 1;
        foreach (int p in positions)
        {
            ulong gap = (ulong)(p - prev - 1);
            writer.WriteUnary((long)(gap >> bestB));
            writer.WriteBits(gap & mask, bestB);
            prev = p;
        }
        return new EncodedPositions(PositionCoding.Rice, bestB, writer.ToArray(), writer.BitCount);
    }

    /// <summary>Exact bit cost of every Rice parameter; returns the cheapest.</summary>
    public static (int Parameter, long Bits) BestRice(ReadOnlySpan<int> positions)
    {
        if (positions.Length == 0) return (0, 0);
        Span<long> cost = stackalloc long[MaxRiceParameter + 1];
        cost.Clear();
        int prev = -1;
        foreach (int p in positions)
        {
            long gap = p - prev - 1;
            for (int b = 0; b <= MaxRiceParameter; b++) cost[b] += (gap >> b) + 1 + b;
            prev = p;
        }
        int best = 0;
        for (int b = 1; b <= MaxRiceParameter; b++)
        {
            if (cost[b] < cost[best]) best = b;
        }
        return (best, cost[best]);
    }

    /// <summary>
    /// Decodes exactly <paramref name="kept"/> positions into <paramref name="output"/>, each checked to be ascending and
    /// below <paramref name="count"/>. Compiled optimised on first call: a node calls it too rarely for the tiered JIT
    /// to promote its long loops promptly (ComPeftCodec.Scatter).
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public static void Decode(PositionCoding coding, int riceParameter, ReadOnlySpan<byte> bytes, long bitLength, int count, Span<int> output)
    {
        int kept = output.Length;
        if (coding == PositionCoding.Bitmap)
        {
            if (bitLength != count || bytes.Length < (count + 7) / 8) throw new ContainerFormatException("Bitmap length does not match the group size.");
            int j = 0;
            int fullWords = count / 64;
            for (int w = 0; w < fullWords; w++)
            {
                ulong word = BitConverter.ToUInt64(bytes.Slice(w * 8, 8));
                while (word != 0)
                {
                    int bit = BitOperations.TrailingZeroCount(word);
                    if (j >= kept) throw new ContainerFormatException("Bitmap holds more positions than declared.");
                    output[j++] = w * 64 + bit;
                    word &= word - 1;
                }
            }
            for (int i = fullWords * 64; i < count; i++)
            {
                if (((bytes[i >> 3] >> (i & 7)) & 1) != 0)
                {
                    if (j >= kept) throw new ContainerFormatException("Bitmap holds more positions than declared.");
                    output[j++] = i;
                }
            }
            if (j != kept) throw new ContainerFormatException($"Bitmap holds {j} positions, header declares {kept}.");
            return;
        }
        if (riceParameter < 0 || riceParameter > MaxRiceParameter) throw new ContainerFormatException($"Rice parameter {riceParameter} out of range.");
        var reader = new BitReader(bytes, bitLength);
        long prev = -1;
        for (int j = 0; j < kept; j++)
        {
            long q = reader.ReadUnary();
            long gap = (q << riceParameter) | (long)reader.ReadBits(riceParameter);
            long pos = prev + 1 + gap;
            if (gap < 0 || pos >= count) throw new ContainerFormatException($"Position {pos} outside a group of {count}.");
            output[j] = (int)pos;
            prev = pos;
        }
        if (reader.Position != bitLength) throw new ContainerFormatException("Trailing bits after the position code.");
    }
}
