using System.Text;

namespace Serving.Gateway.RateLimiting;

/// <summary>
/// A write-through view of the response body that notices the node's <c>"generated_tokens":N</c> (the usage extension:
/// every token the node generated for the request, alignment candidates and beams included) in a JSON body or in the
/// usage chunk of a stream, without buffering or changing a byte. The pattern cannot match inside generated text: a
/// quote inside a JSON string is escaped (<c>\"</c>).
/// </summary>
internal sealed class GeneratedTokensTap(Stream inner) : Stream
{
    private static readonly byte[] Pattern = Encoding.ASCII.GetBytes("\"generated_tokens\":");
    private int _matched;
    private bool _inNumber;
    private long _number;

    /// <summary>The largest value seen, null when none was.</summary>
    public long? GeneratedTokens { get; private set; }

    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        Scan(buffer);
        inner.Write(buffer);
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        Scan(buffer.Span);
        return inner.WriteAsync(buffer, cancellationToken);
    }

    public override void Flush() => inner.Flush();

    public override Task FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    /// <summary>Feeds bytes through the matcher (state carries across writes, so a split pattern is still found).</summary>
    internal void Scan(ReadOnlySpan<byte> bytes)
    {
        foreach (var b in bytes)
        {
            if (_inNumber)
            {
                if (b is >= (byte)'0' and <= (byte)'9')
                {
                    _number = _number < 0 ? b - '0' : Math.Min(_number * 10 + (b - '0'), int.MaxValue);
                    continue;
                }
                if (b == (byte)' ' && _number < 0) continue;
                if (_number >= 0) GeneratedTokens = Math.Max(GeneratedTokens ?? 0, _number);
                _inNumber = false;
            }
            // Knuth–Morris–Pratt over the fixed pattern.
            while (_matched > 0 && b != Pattern[_matched]) _matched = Fallback[_matched - 1];
            if (b == Pattern[_matched] && ++_matched == Pattern.Length)
            {
                _matched = 0;
                _inNumber = true;
                _number = -1;
            }
        }
    }

    private static readonly int[] Fallback = PrefixFunction(Pattern);

    private static int[] PrefixFunction(byte[] p)
    {
        var pi = new int[p.Length];
        for (int i = 1, k = 0; i < p.Length; i++)
        {
            while (k > 0 && p[i] != p[k]) k = pi[k - 1];
            if (p[i] == p[k]) k++;
            pi[i] = k;
        }
        return pi;
    }
}
