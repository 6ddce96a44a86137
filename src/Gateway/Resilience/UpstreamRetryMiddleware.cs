using Microsoft.Extensions.Options;
using Polly;
using Polly.Retry;
using Serving.Contracts.Errors;
using Serving.Gateway.Api;
using Serving.Gateway.Telemetry;
using Yarp.ReverseProxy.Forwarder;
using Yarp.ReverseProxy.Model;

namespace Serving.Gateway.Resilience;

/// <summary>
/// Retries a forward on another node only when it provably never reached the first one: the connection was refused or
/// could not be opened, and nothing was sent back. A generation a node accepted is never replayed. Runs before YARP's
/// load balancing, so each attempt picks the best of the nodes not tried yet.
/// </summary>
internal sealed partial class UpstreamRetryMiddleware
{
    private readonly ResiliencePipeline<bool> _pipeline;
    private readonly GatewayMetrics _metrics;
    private readonly ILogger<UpstreamRetryMiddleware> _logger;

    private readonly TimeSpan _retryAfter;

    public UpstreamRetryMiddleware(IOptions<ResilienceOptions> options, IOptions<GatewayOptions> gateway, GatewayMetrics metrics, ILogger<UpstreamRetryMiddleware> logger)
    {
        _retryAfter = gateway.Value.RetryAfter;
        _metrics = metrics;
        _logger = logger;
        _pipeline = options.Value.MaxConnectRetries == 0
            ? ResiliencePipeline<bool>.Empty
            : new ResiliencePipelineBuilder<bool>()
                .AddRetry(new RetryStrategyOptions<bool>
                {
                    MaxRetryAttempts = options.Value.MaxConnectRetries,
                    Delay = TimeSpan.Zero,
                    BackoffType = DelayBackoffType.Constant,
                    ShouldHandle = args => ValueTask.FromResult(args.Outcome.Result),
                })
                .Build();
    }

    public async Task InvokeAsync(HttpContext context, Func<Task> next)
    {
        var proxy = context.GetReverseProxyFeature();
        var tried = new List<DestinationState>();
        // Load balancing narrows AvailableDestinations to the one it picked; later attempts choose from the original set.
        var candidates = proxy.AvailableDestinations;
        await _pipeline.ExecuteAsync(async _ =>
        {
            if (tried.Count > 0)
            {
                // Reset what the failed attempt left, and offer only the nodes not tried yet.
                var remaining = candidates.Where(d => !tried.Contains(d)).ToList();
                if (remaining.Count == 0) return false;
                proxy.AvailableDestinations = remaining;
                context.Features.Set<IForwarderErrorFeature>(null);
                context.Response.StatusCode = StatusCodes.Status200OK;
                if (context.Request.Body.CanSeek) context.Request.Body.Position = 0;
                _metrics.RecordRetry();
            }
            await next();
            if (!NeverReachedNode(context)) return false;
            if (proxy.ProxiedDestination is { } d)
            {
                tried.Add(d);
                LogConnectFailed(_logger, d.DestinationId);
            }
            return proxy.ProxiedDestination is not null;
        }, context.RequestAborted);

        if (context.GetForwarderErrorFeature() is { } error && !context.Response.HasStarted)
        {
            var (code, message) = error.Error switch
            {
                ForwarderError.NoAvailableDestinations => (ErrorCodes.NoNodeAvailable, "No inference node is available for this model right now; retry shortly."),
                ForwarderError.RequestTimedOut => (ErrorCodes.UpstreamTimeout, "The inference node did not answer in time."),
                ForwarderError.RequestCanceled => (ErrorCodes.ClientClosed, "The request was cancelled."),
                _ when NeverReachedNode(context) => (ErrorCodes.NoNodeAvailable, "No inference node accepted the connection; retry shortly."),
                _ => (ErrorCodes.UpstreamError, "The inference node failed while handling the request; it was not retried because it may have started."),
            };
            // A 503 (no node took it) says when to come back, as every 429/503 of the gateway does.
            await OpenAiErrors.WriteAsync(context, code, message, retryAfter: code.Status == 503 ? _retryAfter : null);
        }
        else if (context.Response.StatusCode == 503 && proxy.ProxiedDestination is null && !context.Response.HasStarted)
        {
            await OpenAiErrors.WriteAsync(context, ErrorCodes.NoNodeAvailable, "No inference node is available for this model right now; retry shortly.", retryAfter: _retryAfter);
        }
    }

    /// <summary>True when the forward failed before any byte reached a node: a refused or failed connection.</summary>
    internal static bool NeverReachedNode(HttpContext context) =>
        !context.Response.HasStarted && context.GetForwarderErrorFeature() is { } error && IsConnectFailure(error);

    /// <summary>True when <paramref name="error"/> is a refused or failed connection: the request never reached the node.</summary>
    internal static bool IsConnectFailure(IForwarderErrorFeature error)
    {
        if (error.Error != ForwarderError.Request) return false;
        for (var e = error.Exception; e is not null; e = e.InnerException)
        {
            if (e is HttpRequestException { HttpRequestError: HttpRequestError.ConnectionError }) return true;
            if (e is System.Net.Sockets.SocketException { SocketErrorCode: System.Net.Sockets.SocketError.ConnectionRefused or System.Net.Sockets.SocketError.HostUnreachable or System.Net.Sockets.SocketError.NetworkUnreachable }) return true;
        }
        return false;
    }

    [LoggerMessage(EventId = EventIds.NodeConnectFailed, Level = LogLevel.Warning, Message = "Node {NodeId} refused the connection; trying the next node")]
    private static partial void LogConnectFailed(ILogger logger, string nodeId);
}
