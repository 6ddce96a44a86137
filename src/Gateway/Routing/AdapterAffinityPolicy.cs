using Microsoft.Extensions.Options;
using Serving.Gateway.Telemetry;
using Yarp.ReverseProxy.LoadBalancing;
using Yarp.ReverseProxy.Model;

namespace Serving.Gateway.Routing;

/// <summary>
/// YARP load-balancing policy <see cref="RoutingPolicies.AdapterAffinity"/>: routes by adapter residency and load
/// (<see cref="AdapterScoring"/>), reading the adapter that <see cref="Api.OpenAiRequestMiddleware"/> found in the body.
/// </summary>
internal sealed class AdapterAffinityPolicy(INodeView view, IOptionsMonitor<RoutingOptions> options, GatewayMetrics metrics) : ILoadBalancingPolicy
{
    public string Name => RoutingPolicies.AdapterAffinity;

    public DestinationState? PickDestination(HttpContext context, ClusterState cluster, IReadOnlyList<DestinationState> availableDestinations)
    {
        if (availableDestinations.Count == 0) return null;
        var request = context.Features.Get<RoutingRequest>();
        var nodes = view.Current.Nodes;
        var candidates = new Candidate[availableDestinations.Count];
        var states = new DestinationState[availableDestinations.Count];
        int n = 0;
        foreach (var d in availableDestinations)
        {
            if (!nodes.TryGetValue(d.DestinationId, out var entry)) continue;
            states[n] = d;
            candidates[n++] = new Candidate(entry, d.ConcurrentRequestCount);
        }
        if (request is null) return n == 0 ? null : states[Random.Shared.Next(n)];

        int pick = AdapterScoring.Pick(candidates.AsSpan(0, n), request.Model.BaseModel, request.Model.AdapterKey, options.CurrentValue, request.SpreadKey);
        if (pick < 0) return null;
        metrics.RecordRouting(candidates[pick].Node.ResidencyOf(request.Model.AdapterKey));
        return states[pick];
    }
}
