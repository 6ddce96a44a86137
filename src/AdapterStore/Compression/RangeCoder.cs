namespace Serving.AdapterStore.Compression;

/// <summary>
/// Binary adaptive range coder (the LZMA construction: 32-bit range, 11-bit probabilities adapting by 1/32 of the
/// error, carry propagated through a cached byte). Codes symbols at close to their adaptive model's entropy, including
/// the well-below-one-bit symbols (mostly zeros) that Huffman-based zstd cannot go under.
/// </summary>
internal sealed class RangeEncoder
{
    public const int ProbabilityBits = 11;
    public const ushort HalfProbability = 1 << (ProbabilityBits - 1);
    private const int AdaptShift = 5;
    private const uint Top = 1u << 24;

    private readonly MemoryStream _out = new();
    private ulong _low;
    private uint _range = uint.MaxValue;
    private byte _cache;
    private long _cacheSize = 1;

    /// <summary>Codes <paramref name="bit"/> with probability-of-zero <paramref name="probability"/>, then adapts it.</summary>
    public void Encode(ref ushort probability, int bit)
    {
        uint bound = (_range >> ProbabilityBits) * probability;
        if (bit == 0)
        {
            _range = bound;
            probability += (ushort)(((1 << ProbabilityBits) - probability) >> AdaptShift);
        }
        else
        {
            _low += bound;
            _range -= bound;
            probability -= (ushort)(probability >> AdaptShift);
        }
        while (_range < Top)
        {
            _range <<= 8;
            ShiftLow();
        }
    }

    /// <summary>Codes the low <paramref name="count"/> bits of <paramref name="value"/> at probability ½ each, most significant first.</summary>
    public void EncodeDirect(uint value, int count)
    {
        for (int i = count - 1; i >= 0; i--)
        {
            _range >>= 1;
            if (((value >> i) & 1) != 0) _low += _range;
            while (_range < Top)
            {
                _range <<= 8;
                ShiftLow();
            }
        }
    }

    /// <summary>Flushes and returns the coded bytes.</summary>
    public byte[] Finish()
    {
        for (int i = 0; i < 5; i++) ShiftLow();
        return _out.ToArray();
    }

    private void ShiftLow()
    {
        if ((uint)_low < 0xFF000000u || (_low >> 32) != 0)
        {
            byte carry = (byte)(_low >> 32);
            byte temp = _cache;
            do
            {
                _out.WriteByte((byte)(temp + carry));
                temp = 0xFF;
            }
            while (--_cacheSize != 0);
            _cache = (byte)((uint)_low >> 24);
        }
        _cacheSize++;
        _low = (_low & 0x00FFFFFFu) << 8;
    }
}

/// <summary>Decodes what <see cref="RangeEncoder"/> wrote. Reading past the end yields zero bytes (callers bound the symbol count and check the end).</summary>
internal ref struct RangeDecoder
{
    private const uint Top = 1u << 24;
    private const int AdaptShift = 5;
    private readonly ReadOnlySpan<byte> _in;
    private int _pos;
    private uint _range;
    private uint _code;

    public RangeDecoder(ReadOnlySpan<byte> input)
    {
        _in = input;
        _pos = 0;
        _range = uint.MaxValue;
        _code = 0;
        for (int i = 0; i < 5; i++) _code = (_code << 8) | Next();
    }

    /// <summary>Bytes consumed beyond the input (a well-formed stream ends with none).</summary>
    public readonly int Overrun => Math.Max(0, _pos - _in.Length);

    public int Decode(ref ushort probability)
    {
        uint bound = (_range >> RangeEncoder.ProbabilityBits) * probability;
        int bit;
        if (_code < bound)
        {
            _range = bound;
            probability += (ushort)(((1 << RangeEncoder.ProbabilityBits) - probability) >> AdaptShift);
            bit = 0;
        }
        else
        {
            _code -= bound;
            _range -= bound;
            probability -= (ushort)(probability >> AdaptShift);
            bit = 1;
        }
        while (_range < Top)
        {
            _range <<= 8;
            _code = (_code << 8) | Next();
        }
        return bit;
    }

    public uint DecodeDirect(int count)
    {
        uint result = 0;
        for (int i = 0; i < count; i++)
        {
            _range >>= 1;
            uint bit = _code >= _range ? 1u : 0u;
            if (bit != 0) _code -= _range;
            result = (result << 1) | bit;
            while (_range < Top)
            {
                _range <<= 8;
                _code = (_code << 8) | Next();
            }
        }
        return result;
    }

    private uint Next()
    {
        int p = _pos++;
        return p < _in.Length ? _in[p] : 0u;
    }
}
