using System.Buffers;
using System.Text;

namespace Serving.Inference.Tokenization;

/// <summary>
/// What each id contributes to the output byte stream. Every tokenizer family reduces decoding to this:
/// concatenate the tokens' bytes, optionally drop one leading space (SentencePiece's dummy prefix), then UTF-8 decode.
/// Streaming and one-shot decoding share it, so they cannot disagree.
/// </summary>
internal sealed class TokenDecodeTable
{
    private readonly byte[]?[] _bytes;
    private readonly bool[] _special;

    public TokenDecodeTable(byte[]?[] bytes, bool[] special, bool stripLeadingSpace)
    {
        _bytes = bytes;
        _special = special;
        StripLeadingSpace = stripLeadingSpace;
        int max = 0;
        foreach (var b in bytes) if (b is not null && b.Length > max) max = b.Length;
        MaxTokenBytes = max;
    }

    /// <summary>Drop one 0x20 at the very start of the decoded stream (decoder <c>Strip</c> / <c>Metaspace</c>).</summary>
    public bool StripLeadingSpace { get; }

    /// <summary>Ids the table covers.</summary>
    public int Count => _bytes.Length;

    /// <summary>Whether <paramref name="id"/> is a special (added, control) token.</summary>
    public bool IsSpecial(int id) => (uint)id < (uint)_special.Length && _special[id];

    /// <summary>The longest byte sequence a single id produces.</summary>
    public int MaxTokenBytes { get; }

    /// <summary>Bytes for an id; empty for unknown ids and for skipped specials.</summary>
    public ReadOnlySpan<byte> Get(int id, bool skipSpecial)
    {
        if ((uint)id >= (uint)_bytes.Length) return default;
        if (skipSpecial && _special[id]) return default;
        return _bytes[id];
    }

    public string Decode(ReadOnlySpan<int> ids, bool skipSpecial)
    {
        int total = 0;
        foreach (int id in ids) total += Get(id, skipSpecial).Length;
        byte[] rented = ArrayPool<byte>.Shared.Rent(Math.Max(total, 1));
        try
        {
            int n = 0;
            foreach (int id in ids)
            {
                var b = Get(id, skipSpecial);
                b.CopyTo(rented.AsSpan(n));
                n += b.Length;
            }
            var span = rented.AsSpan(0, n);
            if (StripLeadingSpace && span.Length > 0 && span[0] == (byte)' ') span = span[1..];
            return Encoding.UTF8.GetString(span);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }
}
