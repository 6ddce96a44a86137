using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace Serving.AdapterStore.Compression;

/// <summary>Appends bits least-significant first (bit i lives in byte i/8 at position i%8).</summary>
internal sealed class BitWriter
{
    private byte[] _buffer;
    private long _bitCount;

    public BitWriter(int capacityBytes = 256) => _buffer = new byte[Math.Max(16, capacityBytes)];

    public long BitCount => _bitCount;

    public void WriteBit(bool bit)
    {
        EnsureBits(1);
        if (bit) _buffer[_bitCount >> 3] |= (byte)(1 << (int)(_bitCount & 7));
        _bitCount++;
    }

    /// <summary>Writes the low <paramref name="count"/> bits of <paramref name="value"/> (count ≤ 57).</summary>
    public void WriteBits(ulong value, int count)
    {
        if (count == 0) return;
        EnsureBits(count);
        long pos = _bitCount;
        int byteIndex = (int)(pos >> 3);
        int shift = (int)(pos & 7);
        ulong existing = BinaryPrimitives.ReadUInt64LittleEndian(_buffer.AsSpan(byteIndex, 8));
        ulong mask = count == 64 ? ulong.MaxValue : (1UL << count) - 1;
        existing |= (value & mask) << shift;
        BinaryPrimitives.WriteUInt64LittleEndian(_buffer.AsSpan(byteIndex, 8), existing);
        _bitCount += count;
    }

    /// <summary>Unary code: <paramref name="q"/> one-bits then a zero-bit.</summary>
    public void WriteUnary(long q)
    {
        while (q >= 56)
        {
            WriteBits((1UL << 56) - 1, 56);
            q -= 56;
        }
        WriteBits((1UL << (int)q) - 1, (int)q + 1);
    }

    public byte[] ToArray() => _buffer.AsSpan(0, (int)((_bitCount + 7) >> 3)).ToArray();

    private void EnsureBits(int extra)
    {
        // Keep 8 spare bytes so that WriteBits can always read/write a whole ulong.
        long needBytes = ((_bitCount + extra + 7) >> 3) + 8;
        if (needBytes <= _buffer.Length) return;
        long size = Math.Max(needBytes, (long)_buffer.Length * 2);
        if (size > Array.MaxLength) throw new InvalidOperationException("Bit stream too large.");
        Array.Resize(ref _buffer, (int)size);
    }
}

/// <summary>Reads what <see cref="BitWriter"/> wrote; every read is bounds-checked against the declared bit length.</summary>
internal ref struct BitReader
{
    private readonly ReadOnlySpan<byte> _data;
    private readonly long _bitLength;
    private long _pos;

    public BitReader(ReadOnlySpan<byte> data, long bitLength)
    {
        if (bitLength > (long)data.Length * 8) throw new ContainerFormatException("Bit stream shorter than its declared length.");
        _data = data;
        _bitLength = bitLength;
        _pos = 0;
    }

    public readonly long Position => _pos;

    public bool ReadBit()
    {
        if (_pos >= _bitLength) throw new ContainerFormatException("Bit stream ended early.");
        bool bit = ((_data[(int)(_pos >> 3)] >> (int)(_pos & 7)) & 1) != 0;
        _pos++;
        return bit;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong ReadBits(int count)
    {
        if (count == 0) return 0;
        if (_pos + count > _bitLength) throw new ContainerFormatException("Bit stream ended early.");
        ulong word = Peek64(_pos);
        _pos += count;
        return count == 64 ? word : word & ((1UL << count) - 1);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public long ReadUnary()
    {
        long q = 0;
        while (true)
        {
            if (_pos >= _bitLength) throw new ContainerFormatException("Bit stream ended inside a unary code.");
            ulong word = Peek64(_pos);
            int ones = BitOperations.TrailingZeroCount(~word);
            long available = Math.Min(56, _bitLength - _pos);
            if (ones < available)
            {
                q += ones;
                _pos += ones + 1;
                return q;
            }
            q += available;
            _pos += available;
        }
    }

    /// <summary>
    /// 64 bits starting at <paramref name="bitPos"/> (missing bytes past the end read as zero); low 56 are valid. Inlined
    /// (with <see cref="ReadBits"/> and <see cref="ReadUnary"/>) into the decoders' loops, which are compiled optimised on
    /// first call: left as calls, these ran at the tiered JIT's tier 0 for a long time in a busy node, which doubled a
    /// ComPEFT decode (docs/benchmarks.md, cold activation).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private readonly ulong Peek64(long bitPos)
    {
        int byteIndex = (int)(bitPos >> 3);
        ulong word = byteIndex + 8 <= _data.Length ? BinaryPrimitives.ReadUInt64LittleEndian(_data.Slice(byteIndex, 8)) : PeekTail(byteIndex);
        return word >> (int)(bitPos & 7);
    }

    /// <summary>The last fewer than 8 bytes as a little-endian word, zeros past the end.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private readonly ulong PeekTail(int byteIndex)
    {
        ulong word = 0;
        for (int i = byteIndex, shift = 0; i < _data.Length; i++, shift += 8) word |= (ulong)_data[i] << shift;
        return word;
    }
}
