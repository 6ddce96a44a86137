using Microsoft.Extensions.Diagnostics.HealthChecks;
using Serving.Gateway.Routing;

namespace Serving.Gateway.Api;

/// <summary>Ready when the registry was read at least once and some node is ready.</summary>
internal sealed class NodesHealthCheck(INodeView view) : IHealthCheck
{
    /// <summary>Check name.</summary>
    public const string Name = "nodes";

    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        if (!view.Initialized) return Task.FromResult(HealthCheckResult.Unhealthy("The node registry has not been read yet."));
        int ready = view.Current.Nodes.Values.Count(n => n.Heartbeat.Ready);
        return Task.FromResult(ready > 0
            ? HealthCheckResult.Healthy($"{ready} nodes ready.")
            : HealthCheckResult.Unhealthy("No inference node is ready."));
    }
}

/// <summary><c>/health/live</c> (the process answers) and <c>/health/ready</c> (it can route).</summary>
public static class HealthApi
{
    /// <summary>Maps the health endpoints (anonymous).</summary>
    public static IEndpointRouteBuilder MapHealthApi(this IEndpointRouteBuilder endpoints)
    {
        endpoints.MapHealthChecks("/health/live", new() { Predicate = _ => false }).AllowAnonymous();
        endpoints.MapHealthChecks("/health/ready", new() { Predicate = c => c.Tags.Contains("ready") }).AllowAnonymous();
        return endpoints;
    }
}

/// <summary>Maps store outages to 503 and client disconnects to a quiet end; everything else falls through.</summary>
internal sealed partial class GatewayExceptionHandler(ILogger<GatewayExceptionHandler> logger) : Microsoft.AspNetCore.Diagnostics.IExceptionHandler
{
    public async ValueTask<bool> TryHandleAsync(HttpContext context, Exception exception, CancellationToken cancellationToken)
    {
        if (exception is OperationCanceledException && context.RequestAborted.IsCancellationRequested)
        {
            LogClientGone(logger, context.Request.Path);
            return true;
        }
        if (exception is StackExchange.Redis.RedisException or TimeoutException)
        {
            context.Response.Headers.RetryAfter = "2";
            await OpenAiErrors.WriteAsync(context, 503, "store_unavailable", "The store (Redis) is unreachable; nothing was changed. Retry shortly.");
            return true;
        }
        return false;
    }

    [LoggerMessage(EventId = 3001, Level = LogLevel.Information, Message = "Client disconnected during {Path}")]
    private static partial void LogClientGone(ILogger logger, string path);
}
