using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.AspNetCore.Routing;

namespace Serving.ServiceDefaults;

/// <summary>
/// Liveness and readiness, the same on every service and mapped here only: <see cref="LivePath"/> answers while the
/// process runs (no check), <see cref="ReadyPath"/> runs the health checks tagged <see cref="ReadyTag"/> (the node: model
/// loaded and not draining; the gateway: registry read and a node ready). Both are anonymous (probes carry no key).
/// </summary>
public static class HealthEndpoints
{
    /// <summary>Liveness path.</summary>
    public const string LivePath = "/health/live";

    /// <summary>Readiness path (what the gateway's active health checks poll on nodes).</summary>
    public const string ReadyPath = "/health/ready";

    /// <summary>Tag of the health checks readiness runs.</summary>
    public const string ReadyTag = "ready";

    /// <summary>Maps <see cref="LivePath"/> and <see cref="ReadyPath"/>.</summary>
    public static IEndpointRouteBuilder MapHealthEndpoints(this IEndpointRouteBuilder endpoints)
    {
        endpoints.MapHealthChecks(LivePath, new HealthCheckOptions { Predicate = _ => false }).AllowAnonymous();
        endpoints.MapHealthChecks(ReadyPath, new HealthCheckOptions { Predicate = c => c.Tags.Contains(ReadyTag) }).AllowAnonymous();
        return endpoints;
    }
}
