using System.Buffers;
using System.Text.Unicode;

namespace Serving.Inference.Tokenization;

/// <summary>
/// Incremental detokeniser for one sequence: text is released only when its UTF-8 is complete, so a character split
/// across byte tokens never comes out broken and a surrogate pair is never split. Not thread-safe (one per sequence).
/// The concatenation of every output plus <see cref="Flush()"/> equals <see cref="ITokenizer.Decode"/> of the same ids.
/// </summary>
public sealed class StreamingDecoder
{
    private readonly TokenDecodeTable _table;
    private readonly bool _skipSpecial;
    private readonly byte[] _pending;   // carried-over incomplete UTF-8 (≤ 3 bytes) + the current token
    private readonly char[] _chars;
    private int _pendingCount;
    private bool _atStart = true;

    internal StreamingDecoder(TokenDecodeTable table, bool skipSpecialTokens)
    {
        _table = table;
        _skipSpecial = skipSpecialTokens;
        _pending = new byte[table.MaxTokenBytes + 4];
        _chars = new char[MaxCharsPerAppend];
    }

    /// <summary>The id → bytes table this decoder reads (what constrained decoding walks its automaton with).</summary>
    internal TokenDecodeTable Table => _table;

    /// <summary>The largest number of chars one <see cref="Append"/>/<see cref="TryAppend"/> or <see cref="Flush()"/> can produce.</summary>
    public int MaxCharsPerAppend => _table.MaxTokenBytes + 4;

    /// <summary>Adds a token; returns the text it completes (<see cref="string.Empty"/> when none). Allocates only the returned string.</summary>
    public string Append(int tokenId)
    {
        TryAppend(tokenId, _chars, out int written);
        return written == 0 ? string.Empty : new string(_chars, 0, written);
    }

    /// <summary>
    /// Adds a token and writes the text it completes into <paramref name="destination"/>; never allocates.
    /// Returns false, consuming nothing, when <paramref name="destination"/> is shorter than the worst case for this token
    /// (<see cref="MaxCharsPerAppend"/> always suffices).
    /// </summary>
    public bool TryAppend(int tokenId, Span<char> destination, out int charsWritten)
    {
        charsWritten = 0;
        var bytes = _table.Get(tokenId, _skipSpecial);
        if (destination.Length < _pendingCount + bytes.Length) return false;
        if (bytes.Length == 0) return true;

        if (_atStart)
        {
            _atStart = false;
            if (_table.StripLeadingSpace && bytes[0] == (byte)' ') bytes = bytes[1..];
        }
        bytes.CopyTo(_pending.AsSpan(_pendingCount));
        _pendingCount += bytes.Length;

        // isFinalBlock: false stops before an incomplete (but so far valid) sequence at the end; that tail waits for the next token.
        var status = Utf8.ToUtf16(_pending.AsSpan(0, _pendingCount), destination, out int read, out charsWritten,
            replaceInvalidSequences: true, isFinalBlock: false);
        if (status is not (OperationStatus.Done or OperationStatus.NeedMoreData))
            throw new InvalidOperationException($"UTF-8 conversion failed: {status}");
        int rest = _pendingCount - read;
        _pending.AsSpan(read, rest).CopyTo(_pending);
        _pendingCount = rest;
        return true;
    }

    /// <summary>Returns what is left (an incomplete sequence becomes U+FFFD) and resets for a new sequence.</summary>
    public string Flush()
    {
        int n = Flush(_chars);
        return n == 0 ? string.Empty : new string(_chars, 0, n);
    }

    /// <summary>Span form of <see cref="Flush()"/>; <paramref name="destination"/> needs at least 3 chars (the longest incomplete tail).</summary>
    public int Flush(Span<char> destination)
    {
        if (destination.Length < _pendingCount)
            throw new ArgumentException($"Flush needs room for {_pendingCount} chars.", nameof(destination));
        int written = 0;
        if (_pendingCount > 0)
        {
            Utf8.ToUtf16(_pending.AsSpan(0, _pendingCount), destination, out _, out written,
                replaceInvalidSequences: true, isFinalBlock: true);
        }
        _pendingCount = 0;
        _atStart = true;
        return written;
    }
}
