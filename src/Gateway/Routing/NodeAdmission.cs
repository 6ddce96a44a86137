using Yarp.ReverseProxy.Model;

namespace Serving.Gateway.Routing;

/// <summary>
/// Load shedding at the gateway, as a pure function: a request is refused here (429 with <c>Retry-After</c>) when every
/// ready node serving its base model already has as many requests in flight from this gateway as it can hold
/// (<c>max_running + max_queue</c> from its heartbeat), so an overloaded node never spends CPU on requests it would only
/// refuse. The count is this gateway's own (exact, never stale); with several gateways a node's own queue limit stays the
/// backstop. Nodes that publish no limits are never full (docs/overload.md).
/// </summary>
public static class NodeAdmission
{
    /// <summary>Requests a node holds at once (running + queued), or 0 when its heartbeat does not say.</summary>
    public static int Limit(NodeEntry node)
    {
        var hb = node.Heartbeat;
        return hb.MaxRunning > 0 && hb.MaxQueue > 0 ? hb.MaxRunning + hb.MaxQueue : 0;
    }

    /// <summary>True when at least one ready node serves <paramref name="baseModel"/> and each is at its <see cref="Limit"/>.</summary>
    public static bool AllFull(ReadOnlySpan<Candidate> candidates, string baseModel)
    {
        bool any = false;
        foreach (var c in candidates)
        {
            if (!c.Node.Heartbeat.Ready || c.Node.Heartbeat.Model != baseModel) continue;
            int limit = Limit(c.Node);
            if (limit == 0 || c.InFlight < limit) return false;
            any = true;
        }
        return any;
    }

    /// <summary><see cref="AllFull(ReadOnlySpan{Candidate}, string)"/> over YARP's available destinations and the registry view.</summary>
    public static bool AllFull(IReadOnlyList<DestinationState> destinations, NodeSnapshot view, string baseModel)
    {
        var candidates = new Candidate[destinations.Count];
        int n = 0;
        foreach (var d in destinations)
        {
            if (view.Nodes.TryGetValue(d.DestinationId, out var entry)) candidates[n++] = new Candidate(entry, d.ConcurrentRequestCount);
        }
        return AllFull(candidates.AsSpan(0, n), baseModel);
    }
}
