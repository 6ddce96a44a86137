using System.Collections.Frozen;
using Serving.Contracts.Registry;

namespace Serving.Gateway.Routing;

/// <summary>One node as the gateway sees it: its last heartbeat and a residency lookup.</summary>
public sealed class NodeEntry
{
    private readonly FrozenDictionary<string, Residency> _residency;

    /// <summary>Builds the lookup from the heartbeat (best tier wins when a node lists an adapter twice).</summary>
    public NodeEntry(NodeHeartbeat heartbeat)
    {
        Heartbeat = heartbeat;
        var map = new Dictionary<string, Residency>(StringComparer.Ordinal);
        void Add(IReadOnlyList<string> ids, Residency r)
        {
            foreach (var id in ids) if (!map.TryGetValue(id, out var old) || r < old) map[id] = r;
        }
        Add(heartbeat.Adapters.Device, Residency.Device);
        Add(heartbeat.Adapters.Host, Residency.Host);
        Add(heartbeat.Adapters.Loading, Residency.Loading);
        _residency = map.ToFrozenDictionary(StringComparer.Ordinal);
    }

    /// <summary>The heartbeat.</summary>
    public NodeHeartbeat Heartbeat { get; }

    /// <summary>Node id (= YARP destination id).</summary>
    public string Id => Heartbeat.NodeId;

    /// <summary>Where <paramref name="adapterKey"/> (<c>tenant/name</c>) sits on this node.</summary>
    public Residency ResidencyOf(string? adapterKey) =>
        adapterKey is not null && _residency.TryGetValue(adapterKey, out var r) ? r : Residency.Absent;
}

/// <summary>An immutable snapshot of the live nodes, swapped atomically on change.</summary>
public sealed record NodeSnapshot(FrozenDictionary<string, NodeEntry> Nodes, DateTimeOffset ReadAt)
{
    /// <summary>No nodes.</summary>
    public static readonly NodeSnapshot Empty = new(FrozenDictionary<string, NodeEntry>.Empty, DateTimeOffset.MinValue);

    /// <summary>True when the destination set (ids, URLs, readiness) differs from <paramref name="other"/>.</summary>
    public bool DestinationsDiffer(NodeSnapshot other)
    {
        if (Nodes.Count != other.Nodes.Count) return true;
        foreach (var (id, n) in Nodes)
        {
            if (!other.Nodes.TryGetValue(id, out var o) || o.Heartbeat.BaseUrl != n.Heartbeat.BaseUrl
                || o.Heartbeat.Ready != n.Heartbeat.Ready || o.Heartbeat.Model != n.Heartbeat.Model) return true;
        }
        return false;
    }
}

/// <summary>The gateway's live view of the node registry.</summary>
public interface INodeView
{
    /// <summary>Current snapshot.</summary>
    NodeSnapshot Current { get; }

    /// <summary>Raised after a snapshot whose destination set changed.</summary>
    event Action<NodeSnapshot>? DestinationsChanged;

    /// <summary>True once one full read succeeded.</summary>
    bool Initialized { get; }

    /// <summary>Base models ever seen in a heartbeat (kept when their nodes leave, so a model without nodes is a 503, not a 404).</summary>
    IReadOnlyCollection<string> KnownModels { get; }
}
