using System.Diagnostics.Metrics;
using Serving.Contracts.Registry;

namespace Serving.Gateway.Telemetry;

/// <summary>
/// The gateway's one <see cref="Meter"/> (<c>Serving.Gateway</c>). Names follow the rule of <c>docs/telemetry.md</c>
/// (Prometheus form on <c>/metrics</c>): <c>serving_gateway_routing_decisions_total{residency}</c>,
/// <c>serving_gateway_upstream_retries_total</c>, <c>serving_gateway_stream_errors_total{reason}</c>,
/// <c>serving_gateway_nodes</c>, <c>serving_gateway_nodes_healthy</c>.
/// </summary>
public sealed class GatewayMetrics
{
    /// <summary>Meter name.</summary>
    public const string MeterName = "Serving.Gateway";

    private readonly Counter<long> _routing;
    private readonly Counter<long> _retries;
    private readonly Counter<long> _streamErrors;

    /// <summary>Creates the instruments.</summary>
    public GatewayMetrics(IMeterFactory meters)
    {
        var meter = meters.Create(MeterName);
        _routing = meter.CreateCounter<long>("serving.gateway.routing_decisions", description: "Requests routed, by the chosen node's residency of the adapter");
        _retries = meter.CreateCounter<long>("serving.gateway.upstream_retries", description: "Forwards retried on another node after a refused connection");
        _streamErrors = meter.CreateCounter<long>("serving.gateway.stream_errors", description: "Streams ended with an error event (node died or fell silent)");
        meter.CreateObservableGauge("serving.gateway.nodes", () => NodeCount?.Invoke() ?? 0, description: "Live nodes in the registry view");
        meter.CreateObservableGauge("serving.gateway.nodes_healthy", () => HealthyNodeCount?.Invoke() ?? 0,
            description: "Nodes the proxy may route to now: in the registry view and not marked unhealthy by active or passive health checks");
    }

    /// <summary>Source of the node count gauge.</summary>
    public Func<int>? NodeCount { get; set; }

    /// <summary>Source of the healthy node count gauge.</summary>
    public Func<int>? HealthyNodeCount { get; set; }

    /// <summary>Counts a routing decision.</summary>
    public void RecordRouting(Residency residency) => _routing.Add(1, new KeyValuePair<string, object?>("residency", residency.ToString().ToLowerInvariant()));

    /// <summary>Counts a retry on another node.</summary>
    public void RecordRetry() => _retries.Add(1);

    /// <summary>Counts a stream ended by the guard.</summary>
    public void RecordStreamError(string reason) => _streamErrors.Add(1, new KeyValuePair<string, object?>("reason", reason));
}
