using System.Net.Http.Headers;
using System.Text;
using Microsoft.Extensions.Options;
using Serving.Contracts.Errors;
using Serving.Gateway.Telemetry;
using Yarp.ReverseProxy.Forwarder;

namespace Serving.Gateway.Resilience;

/// <summary>
/// Wraps the forwarder's handler so that a streamed (SSE) response whose node dies or falls silent ends with a clear
/// error event instead of a reset connection or a hang (see <see cref="GuardedStream"/>).
/// </summary>
internal sealed class GuardedForwarderHttpClientFactory(IOptions<ResilienceOptions> options, GatewayMetrics metrics) : ForwarderHttpClientFactory
{
    protected override HttpMessageHandler WrapHandler(ForwarderHttpClientContext context, HttpMessageHandler handler) =>
        new StreamGuardHandler(options.Value.StreamIdleTimeout, metrics) { InnerHandler = base.WrapHandler(context, handler) };
}

/// <summary>Swaps the content of <c>text/event-stream</c> responses for a <see cref="GuardedStream"/>.</summary>
internal sealed class StreamGuardHandler(TimeSpan idleTimeout, GatewayMetrics metrics) : DelegatingHandler
{
    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        var response = await base.SendAsync(request, cancellationToken);
        if (response.Content.Headers.ContentType?.MediaType != "text/event-stream") return response;
        var inner = await response.Content.ReadAsStreamAsync(cancellationToken);

        var guarded = new StreamContent(new GuardedStream(inner, idleTimeout, metrics));
        foreach (var h in response.Content.Headers) guarded.Headers.TryAddWithoutValidation(h.Key, h.Value);
        response.Content = guarded;
        return response;
    }
}

/// <summary>
/// A read-only view of a node's SSE body. When reading from the node fails (connection reset: the node died) or nothing
/// arrives for the idle timeout, it yields one final event
/// <c>data: {"error":{"message":..., "type":"server_error", "code":"upstream_disconnected"|"upstream_timeout"}}</c>
/// and ends, so the gateway completes the response normally and the client sees why the stream stopped. No
/// <c>[DONE]</c> follows, so the output is never mistaken for a complete one. A cancellation by the client is passed
/// through unchanged (it cancels the upstream request).
/// </summary>
internal sealed class GuardedStream(Stream inner, TimeSpan idleTimeout, GatewayMetrics metrics) : Stream
{
    private byte[]? _tail;
    private int _tailOffset;
    private byte _last1 = (byte)'\n', _last2 = (byte)'\n';
    private bool _done;

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (_tail is not null) return DrainTail(buffer.Span);
        if (_done) return 0;
        using var idle = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        idle.CancelAfter(idleTimeout);
        try
        {
            int n = await inner.ReadAsync(buffer, idle.Token);
            // A zero-byte read (YARP waits for data that way) says nothing about the end of the stream.
            if (buffer.Length == 0) return 0;
            if (n == 0)
            {
                _done = true;
                return 0;
            }
            var s = buffer.Span[..n];
            _last2 = n >= 2 ? s[^2] : _last1;
            _last1 = s[^1];
            return n;
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            metrics.RecordStreamError("timeout");
            StartTail(ErrorCodes.UpstreamTimeout, $"The inference node sent nothing for {idleTimeout.TotalSeconds:0.#} s; the response is incomplete.");
        }
        catch (Exception e) when (e is IOException or HttpRequestException && !cancellationToken.IsCancellationRequested)
        {
            metrics.RecordStreamError("disconnected");
            StartTail(ErrorCodes.UpstreamDisconnected, "The inference node stopped in the middle of the response; the output is incomplete. Retry the request.");
        }
        return DrainTail(buffer.Span);
    }

    public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    private void StartTail(ErrorCode error, string message)
    {
        string json = System.Text.Json.JsonSerializer.Serialize(error.Body(message));
        _tail = Encoding.UTF8.GetBytes((_last1 == '\n' && _last2 == '\n' ? "" : "\n\n") + "data: " + json + "\n\n");
        _tailOffset = 0;
        _done = true;
    }

    private int DrainTail(Span<byte> buffer)
    {
        int n = Math.Min(buffer.Length, _tail!.Length - _tailOffset);
        _tail.AsSpan(_tailOffset, n).CopyTo(buffer);
        _tailOffset += n;
        if (_tailOffset == _tail.Length) _tail = null;
        return n;
    }

    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing) inner.Dispose();
        base.Dispose(disposing);
    }
}
