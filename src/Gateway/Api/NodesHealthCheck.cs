using Microsoft.Extensions.Diagnostics.HealthChecks;
using Serving.Gateway.Routing;

namespace Serving.Gateway.Api;

/// <summary>Ready when the registry was read at least once and some node is ready (<c>/health/ready</c>).</summary>
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
