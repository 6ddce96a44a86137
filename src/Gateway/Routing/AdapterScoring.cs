using System.IO.Hashing;
using System.Runtime.InteropServices;
using System.Text;
using Serving.Contracts.Registry;

namespace Serving.Gateway.Routing;

/// <summary>A node offered to the scorer: its registry entry plus what this gateway has in flight to it.</summary>
/// <param name="Node">Registry entry.</param>
/// <param name="InFlight">Requests this gateway is forwarding to the node right now.</param>
public readonly record struct Candidate(NodeEntry Node, int InFlight);

/// <summary>
/// The routing decision, as a pure function (documented in <c>docs/gateway.md</c>):
/// <list type="number">
/// <item>Only ready nodes serving the requested base model are candidates.</item>
/// <item>If the adapter is resident (device, host or loading) on some candidate, each candidate costs
/// <c>residency + LoadWeight·load + KvWeight·kv</c> with residency 0 / Host / Loading / Absent cost and
/// <c>load = max(queued + running, in flight from this gateway) / capacity</c>; the cheapest wins, ties broken by the
/// rendezvous rank.</item>
/// <item>If it is resident nowhere (or no adapter is named), candidates are ranked by rendezvous hash of
/// (adapter, node id) and the first whose load is within the bound <c>c · mean load + 1</c> wins, so a cold adapter
/// settles on one node (and spills to the next in its own order only under load). Base-model requests use the same
/// rule with a hash of the request's random key, which spreads them by load.</item>
/// </list>
/// </summary>
public static class AdapterScoring
{
    /// <summary>Picks the best candidate index, or -1 when none serves the base model.</summary>
    public static int Pick(ReadOnlySpan<Candidate> candidates, string baseModel, string? adapterKey, RoutingOptions options, ulong spreadKey = 0)
    {
        int best = -1;
        Residency bestResidency = Residency.Absent;
        for (int i = 0; i < candidates.Length; i++)
        {
            if (!Eligible(candidates[i], baseModel)) continue;
            var r = candidates[i].Node.ResidencyOf(adapterKey);
            if (best < 0 || r < bestResidency)
            {
                best = i;
                bestResidency = r;
            }
        }
        if (best < 0) return -1;
        return bestResidency == Residency.Absent
            ? PickByRendezvous(candidates, baseModel, adapterKey, options, spreadKey)
            : PickByCost(candidates, baseModel, adapterKey, options);
    }

    /// <summary>Cost of sending the adapter to a candidate (lower is better).</summary>
    public static double Cost(in Candidate c, string? adapterKey, RoutingOptions options)
    {
        double residency = c.Node.ResidencyOf(adapterKey) switch
        {
            Residency.Device => 0,
            Residency.Host => options.HostCost,
            Residency.Loading => options.LoadingCost,
            _ => options.AbsentCost,
        };
        return residency + options.LoadWeight * Load(c, options) + options.KvWeight * Math.Clamp(c.Node.Heartbeat.KvUsage, 0, 1);
    }

    /// <summary>Load as a fraction of capacity.</summary>
    public static double Load(in Candidate c, RoutingOptions options)
    {
        var hb = c.Node.Heartbeat;
        int capacity = hb.MaxRunning > 0 ? hb.MaxRunning : options.DefaultCapacity;
        return Pending(c) / (double)capacity;
    }

    /// <summary>Requests queued or running on the node: the larger of its own report and this gateway's in-flight count.</summary>
    public static int Pending(in Candidate c) => Math.Max(c.Node.Heartbeat.QueueDepth + c.Node.Heartbeat.Running, c.InFlight);

    /// <summary>Rendezvous (highest random weight) score of a node for a key.</summary>
    public static ulong RendezvousWeight(string key, string nodeId, ulong salt = 0)
    {
        Span<byte> buffer = stackalloc byte[512];
        int n = Encoding.UTF8.GetByteCount(key) + 1 + Encoding.UTF8.GetByteCount(nodeId);
        byte[]? rented = null;
        if (n > buffer.Length) buffer = rented = new byte[n];
        int w = Encoding.UTF8.GetBytes(key, buffer);
        buffer[w++] = 0;
        w += Encoding.UTF8.GetBytes(nodeId, buffer[w..]);
        return XxHash64.HashToUInt64(buffer[..w], (long)salt);
    }

    private static bool Eligible(in Candidate c, string baseModel) =>
        c.Node.Heartbeat.Ready && string.Equals(c.Node.Heartbeat.Model, baseModel, StringComparison.Ordinal);

    private static int PickByCost(ReadOnlySpan<Candidate> candidates, string baseModel, string? adapterKey, RoutingOptions options)
    {
        int best = -1;
        double bestCost = double.MaxValue;
        ulong bestWeight = 0;
        for (int i = 0; i < candidates.Length; i++)
        {
            if (!Eligible(candidates[i], baseModel)) continue;
            double cost = Cost(candidates[i], adapterKey, options);
            ulong weight = RendezvousWeight(adapterKey ?? "", candidates[i].Node.Id);
            if (best < 0 || cost < bestCost || (cost == bestCost && weight > bestWeight))
            {
                best = i;
                bestCost = cost;
                bestWeight = weight;
            }
        }
        return best;
    }

    private static int PickByRendezvous(ReadOnlySpan<Candidate> candidates, string baseModel, string? adapterKey, RoutingOptions options, ulong spreadKey)
    {
        // Mean load over eligible nodes counts the request being placed, as in consistent hashing with bounded loads.
        int eligible = 0;
        long total = 1;
        for (int i = 0; i < candidates.Length; i++)
        {
            if (!Eligible(candidates[i], baseModel)) continue;
            eligible++;
            total += Pending(candidates[i]);
        }
        double bound = options.BoundedLoadFactor * total / eligible + 1;
        string key = adapterKey ?? "";
        ulong salt = adapterKey is null ? spreadKey : 0;

        Span<(ulong Weight, int Index)> ranked = eligible <= 64 ? stackalloc (ulong, int)[eligible] : new (ulong, int)[eligible];
        int k = 0;
        for (int i = 0; i < candidates.Length; i++)
        {
            if (Eligible(candidates[i], baseModel)) ranked[k++] = (RendezvousWeight(key, candidates[i].Node.Id, salt), i);
        }
        ranked.Sort(static (a, b) => b.Weight.CompareTo(a.Weight));

        int leastLoaded = ranked[0].Index;
        foreach (var (_, index) in ranked)
        {
            if (Pending(candidates[index]) + 1 <= bound) return index;
            if (Pending(candidates[index]) < Pending(candidates[leastLoaded])) leastLoaded = index;
        }
        return leastLoaded;
    }
}
