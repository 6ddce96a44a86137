using System.Buffers;

namespace Serving.Gateway.RateLimiting;

/// <summary>What the client asked to see of a stream's usage (the gateway always asks the node for all of it).</summary>
internal enum ClientUsage
{
    /// <summary>No usage: the usage-only chunk is dropped and <c>usage</c> is removed from every other chunk.</summary>
    None,

    /// <summary><c>include_usage</c>: the usage-only chunk passes, other chunks carry <c>"usage": null</c> (OpenAI's shape).</summary>
    Final,

    /// <summary><c>include_usage</c> + <c>continuous_usage_stats</c>: every chunk passes unchanged.</summary>
    Continuous,
}

/// <summary>
/// The response body as the proxy writes it, read on the way to the client for the node's <c>usage</c>:
/// <list type="bullet">
/// <item>a JSON body (not streamed) is copied aside as it passes (up to <see cref="MaxJsonBytes"/>) and read when it ends;</item>
/// <item>an SSE stream is cut into events; an event whose JSON carries <c>usage</c> is read (the last one seen is the
/// progress of a cancelled stream, the usage-only chunk is the final count) and rewritten to what the client asked for
/// (<see cref="ClientUsage"/>): the node was asked for usage in every chunk whether the client wanted it or not.</item>
/// </list>
/// Events without usage, and every byte of a JSON body, pass unchanged. The text of a chunk cannot fake usage: only the
/// top level of each event's JSON is read.
/// </summary>
internal sealed class UsageCapture(Stream inner, Func<bool> isEventStream, ClientUsage client) : Stream
{
    /// <summary>Largest JSON body read for its usage; a larger one passes unread (its usage is unknown).</summary>
    public const int MaxJsonBytes = 8 << 20;

    private enum Mode { Undecided, Json, Sse }

    private Mode _mode;
    private byte[] _buffer = [];
    private int _length;
    private bool _jsonTooLarge;

    /// <summary>The final usage: the JSON body's, or the stream's usage-only chunk; null until seen.</summary>
    public UsageReport? Final { get; private set; }

    /// <summary>The latest usage a stream chunk carried (the node's counts so far); null when none did.</summary>
    public UsageReport? Progress { get; private set; }

    /// <summary>A stream event with choices (generated text) reached the client.</summary>
    public bool SawChoices { get; private set; }

    /// <summary>True for a stream (decided at the first write).</summary>
    public bool IsStream => _mode == Mode.Sse;

    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override void Write(byte[] buffer, int offset, int count) => WriteAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (_mode == Mode.Undecided) _mode = isEventStream() ? Mode.Sse : Mode.Json;
        if (_mode == Mode.Json)
        {
            if (!_jsonTooLarge)
            {
                if (_length + buffer.Length > MaxJsonBytes) _jsonTooLarge = true;
                else Append(buffer.Span);
            }
            await inner.WriteAsync(buffer, cancellationToken);
            return;
        }
        Append(buffer.Span);
        await WriteCompleteEventsAsync(cancellationToken);
    }

    public override void Flush() => inner.Flush();

    public override Task FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);

    /// <summary>
    /// Ends the capture: reads a JSON body's usage, or passes on what is left of a stream (an event cut short by a dying
    /// node, unchanged). Call once, after the proxy finished writing.
    /// </summary>
    public async Task CompleteAsync(CancellationToken cancellationToken)
    {
        if (_mode == Mode.Json)
        {
            if (!_jsonTooLarge && UsageInJson.Read(_buffer.AsSpan(0, _length)) is { Usage: { } usage }) Final = usage;
        }
        else if (_mode == Mode.Sse && _length > 0)
        {
            await inner.WriteAsync(_buffer.AsMemory(0, _length), cancellationToken);
        }
        _length = 0;
    }

    private void Append(ReadOnlySpan<byte> bytes)
    {
        if (_length + bytes.Length > _buffer.Length)
        {
            var grown = ArrayPool<byte>.Shared.Rent(Math.Max(_length + bytes.Length, Math.Max(4096, _buffer.Length * 2)));
            _buffer.AsSpan(0, _length).CopyTo(grown);
            if (_buffer.Length > 0) ArrayPool<byte>.Shared.Return(_buffer);
            _buffer = grown;
        }
        bytes.CopyTo(_buffer.AsSpan(_length));
        _length += bytes.Length;
    }

    /// <summary>Writes every complete event in the buffer (rewritten where needed) and keeps the incomplete rest.</summary>
    private async ValueTask WriteCompleteEventsAsync(CancellationToken cancellationToken)
    {
        int done = 0;
        while (true)
        {
            int end = EventEnd(_buffer.AsSpan(done, _length - done));
            if (end < 0) break;
            var eventBytes = _buffer.AsMemory(done, end);
            var (keep, cut) = Inspect(eventBytes.Span);
            if (cut is not { } c)
            {
                if (keep) await inner.WriteAsync(eventBytes, cancellationToken);
            }
            else
            {
                // The usage member is removed (or its value replaced by null): write around it.
                await inner.WriteAsync(eventBytes[..c.Start], cancellationToken);
                if (c.Replacement.Length > 0) await inner.WriteAsync(c.Replacement, cancellationToken);
                await inner.WriteAsync(eventBytes[(c.Start + c.Length)..], cancellationToken);
            }
            done += end;
        }
        if (done > 0)
        {
            _buffer.AsSpan(done, _length - done).CopyTo(_buffer);
            _length -= done;
        }
    }

    /// <summary>Length of the first complete event (through its blank line), -1 when the buffer holds none.</summary>
    private static int EventEnd(ReadOnlySpan<byte> bytes)
    {
        int lf = bytes.IndexOf("\n\n"u8);
        int crlf = bytes.IndexOf("\r\n\r\n"u8);
        if (lf < 0 && crlf < 0) return -1;
        if (crlf < 0 || (lf >= 0 && lf < crlf)) return lf + 2;
        return crlf + 4;
    }

    private static readonly byte[] NullValue = "null"u8.ToArray();

    /// <summary>Reads one event; says whether it passes and which bytes of it to cut out or replace.</summary>
    private (bool Keep, (int Start, int Length, ReadOnlyMemory<byte> Replacement)? Cut) Inspect(ReadOnlySpan<byte> e)
    {
        if (!e.StartsWith("data:"u8)) return (true, null);
        int jsonStart = e.Length > 5 && e[5] == (byte)' ' ? 6 : 5;
        var json = e[jsonStart..].TrimEnd("\r\n"u8);
        if (json.Length == 0 || json[0] != (byte)'{') return (true, null);
        bool hasUsage = json.IndexOf("\"usage\""u8) >= 0;
        if (!hasUsage)
        {
            // Cheap: a chunk with choices says text was sent; the usage-only and alignment chunks have "choices":[], an
            // error event none.
            if (json.IndexOf("\"choices\":["u8) >= 0 && json.IndexOf("\"choices\":[]"u8) < 0) SawChoices = true;
            return (true, null);
        }
        if (UsageInJson.Read(json) is not { } found) return (true, null);
        if (!found.ChoicesEmpty) SawChoices = true;
        if (found.Usage is { } usage)
        {
            if (found.ChoicesEmpty) Final = usage;
            else Progress = usage;
        }
        if (client == ClientUsage.Continuous || found.UsageRange.Start < 0) return (true, null);
        if (found.ChoicesEmpty && found.Usage is not null)
        {
            // The usage-only chunk: OpenAI's shape when asked for, nothing otherwise.
            return (client == ClientUsage.Final, null);
        }
        if (client == ClientUsage.Final)
        {
            if (found.Usage is null) return (true, null); // already null
            int valueStart = jsonStart + found.ValueStart;
            int valueLength = found.UsageRange.Start + found.UsageRange.Length - found.ValueStart;
            return (true, (valueStart, valueLength, NullValue));
        }
        var (start, length) = MemberWithComma(json, found.UsageRange.Start, found.UsageRange.Length);
        return (true, (jsonStart + start, length, ReadOnlyMemory<byte>.Empty));
    }

    /// <summary>The member's range widened by the comma that separates it from its neighbour (before it, else after it).</summary>
    private static (int Start, int Length) MemberWithComma(ReadOnlySpan<byte> json, int start, int length)
    {
        int before = start - 1;
        while (before > 0 && IsSpace(json[before])) before--;
        if (json[before] == (byte)',') return (before, start + length - before);
        int after = start + length;
        while (after < json.Length && IsSpace(json[after])) after++;
        if (after < json.Length && json[after] == (byte)',') return (start, after + 1 - start);
        return (start, length);
    }

    private static bool IsSpace(byte b) => b is (byte)' ' or (byte)'\t' or (byte)'\r' or (byte)'\n';

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (_buffer.Length > 0) ArrayPool<byte>.Shared.Return(_buffer);
        _buffer = [];
        base.Dispose(disposing);
    }
}
