using System.Diagnostics;
using System.Diagnostics.Metrics;
using Serving.Contracts.Registry;

namespace Serving.Gateway.Telemetry;

/// <summary>
/// The gateway's one <see cref="Meter"/> (<c>Serving.Gateway</c>). Names follow the rule of <c>docs/telemetry.md</c> (the table: <c>docs/deploy.md</c>)
/// (Prometheus form on <c>/metrics</c>): <c>serving_gateway_routing_decisions_total{residency}</c>,
/// <c>serving_gateway_upstream_retries_total</c>, <c>serving_gateway_stream_errors_total{reason}</c>,
/// <c>serving_gateway_nodes</c>, <c>serving_gateway_nodes_healthy</c>, <c>serving_gateway_prompt_tokens_total{tenant,adapter}</c>,
/// <c>serving_gateway_generated_tokens_total{tenant,adapter}</c>, <c>serving_gateway_token_settlements_total{outcome}</c>,
/// <c>serving_gateway_requests_shed_total</c>.
/// </summary>
public sealed class GatewayMetrics
{
    /// <summary>Meter name.</summary>
    public const string MeterName = "Serving.Gateway";

    /// <summary>Default <c>service.name</c> of the gateway's traces and metrics (<c>Telemetry:ServiceName</c> overrides it).</summary>
    public const string ServiceName = "serving-gateway";

    /// <summary>YARP's activity source: the forward to the node (<c>proxy.forwarder</c>) between the server and client spans.</summary>
    public const string YarpActivitySource = "Yarp.ReverseProxy";

    private readonly Counter<long> _routing;
    private readonly Counter<long> _retries;
    private readonly Counter<long> _streamErrors;
    private readonly Counter<long> _promptTokens;
    private readonly Counter<long> _generatedTokens;
    private readonly Counter<long> _settlements;
    private readonly Counter<long> _shed;
    private readonly BoundedLabels _tenantLabels = new(MaxTenantLabels);
    private readonly BoundedLabels _adapterLabels = new(MaxAdapterLabels);

    /// <summary>Distinct tenants with their own label; later ones share <c>other</c>.</summary>
    public const int MaxTenantLabels = 100;

    /// <summary>Distinct adapters with their own label; later ones share <c>other</c>.</summary>
    public const int MaxAdapterLabels = 50;

    /// <summary>Creates the instruments.</summary>
    public GatewayMetrics(IMeterFactory meters)
    {
        var meter = meters.Create(MeterName);
        _routing = meter.CreateCounter<long>("serving.gateway.routing_decisions", description: "Requests routed, by the chosen node's residency of the adapter");
        _retries = meter.CreateCounter<long>("serving.gateway.upstream_retries", description: "Forwards retried on another node after a refused connection");
        _streamErrors = meter.CreateCounter<long>("serving.gateway.stream_errors", description: "Streams ended with an error event (node died or fell silent)");
        _promptTokens = meter.CreateCounter<long>("serving.gateway.prompt_tokens", description: "Prompt tokens charged, by tenant and adapter (none: the base model)");
        _generatedTokens = meter.CreateCounter<long>("serving.gateway.generated_tokens",
            description: "Generated tokens charged (every choice, alignment candidates included), by tenant and adapter (none: the base model)");
        _settlements = meter.CreateCounter<long>("serving.gateway.token_settlements",
            description: "Token reservations settled, by outcome: usage (charged the node's usage), refused (refunded), cancelled (charged what was generated), unknown (kept the reservation)");
        _shed = meter.CreateCounter<long>("serving.gateway.requests_shed",
            description: "Requests the gateway refused (429) because every node serving their model was at its queue limit");
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

    /// <summary>Counts a request refused because every node was at its queue limit (<see cref="Routing.NodeAdmission"/>).</summary>
    public void RecordShed() => _shed.Add(1);

    /// <summary>Counts a settled token reservation and, when the node's usage is known, its tokens.</summary>
    public void RecordTokens(string tenant, string? adapter, string outcome, long promptTokens, long generatedTokens)
    {
        _settlements.Add(1, new KeyValuePair<string, object?>("outcome", outcome));
        if (promptTokens == 0 && generatedTokens == 0) return;
        var labels = new TagList
        {
            { "tenant", _tenantLabels.Label(tenant) },
            { "adapter", adapter is null ? "none" : _adapterLabels.Label(adapter) },
        };
        if (promptTokens > 0) _promptTokens.Add(promptTokens, labels);
        if (generatedTokens > 0) _generatedTokens.Add(generatedTokens, labels);
    }

    /// <summary>Counts a stream ended by the guard.</summary>
    public void RecordStreamError(string reason) => _streamErrors.Add(1, new KeyValuePair<string, object?>("reason", reason));
}
