using Serving.Contracts.Registry;
using Serving.Gateway.Routing;

namespace Serving.Gateway.Tests.Routing;

public sealed class AdapterScoringTests
{
    private static readonly RoutingOptions Options = new();

    private static Candidate Node(string id, string[]? device = null, string[]? host = null, string[]? loading = null,
        int queue = 0, int running = 0, double kv = 0, bool ready = true, string model = "m", int inFlight = 0) =>
        new(new NodeEntry(new NodeHeartbeat
        {
            NodeId = id, BaseUrl = $"http://{id}/", Model = model, Ready = ready, QueueDepth = queue, Running = running, KvUsage = kv, MaxRunning = 32,
            Adapters = new AdapterResidency { Device = device ?? [], Host = host ?? [], Loading = loading ?? [] },
        }), inFlight);

    private static string PickId(Candidate[] nodes, string? adapter, ulong spread = 0)
    {
        int i = AdapterScoring.Pick(nodes, "m", adapter, Options, spread);
        return i < 0 ? "" : nodes[i].Node.Id;
    }

    [Fact]
    public void Pick_AdapterOnDeviceOfOneNode_ChoosesThatNode()
    {
        var nodes = new[] { Node("a"), Node("b", device: ["t/x"]), Node("c") };
        Assert.Equal("b", PickId(nodes, "t/x"));
    }

    [Theory]
    [InlineData("device", "host")]
    [InlineData("host", "loading")]
    [InlineData("loading", "absent")]
    public void Pick_EqualLoad_PrefersBetterTier(string better, string worse)
    {
        Candidate Make(string id, string tier) => tier switch
        {
            "device" => Node(id, device: ["t/x"]),
            "host" => Node(id, host: ["t/x"]),
            "loading" => Node(id, loading: ["t/x"]),
            _ => Node(id),
        };
        Assert.Equal("good", PickId([Make("bad", worse), Make("good", better)], "t/x"));
        Assert.Equal("good", PickId([Make("good", better), Make("bad", worse)], "t/x"));
    }

    [Fact]
    public void Pick_HolderModeratelyBusy_StillChosen()
    {
        // Holder at full capacity (load 1 → cost 2) beats an idle node where the adapter is absent (cost 4).
        var nodes = new[] { Node("holder", device: ["t/x"], running: 32), Node("idle") };
        Assert.Equal("holder", PickId(nodes, "t/x"));
    }

    [Fact]
    public void Pick_HolderOverloaded_SpillsToOtherNode()
    {
        // Holder with 3× capacity pending (cost 6) loses to an idle node (cost 4).
        var nodes = new[] { Node("holder", device: ["t/x"], running: 32, queue: 64), Node("idle") };
        Assert.Equal("idle", PickId(nodes, "t/x"));
    }

    [Fact]
    public void Pick_InFlightFromGatewayCountsWhenHeartbeatIsStale()
    {
        var nodes = new[] { Node("holder", device: ["t/x"], inFlight: 100), Node("idle") };
        Assert.Equal("idle", PickId(nodes, "t/x"));
    }

    [Fact]
    public void Pick_KvUsageBreaksTieBetweenHolders()
    {
        var nodes = new[] { Node("full", device: ["t/x"], kv: 0.9), Node("empty", device: ["t/x"], kv: 0.1) };
        Assert.Equal("empty", PickId(nodes, "t/x"));
    }

    [Fact]
    public void Pick_NotReadyOrOtherModel_Excluded()
    {
        var nodes = new[] { Node("down", device: ["t/x"], ready: false), Node("other", device: ["t/x"], model: "other"), Node("ok") };
        Assert.Equal("ok", PickId(nodes, "t/x"));
        Assert.Equal(-1, AdapterScoring.Pick([Node("other", model: "other")], "m", "t/x", Options));
    }

    [Fact]
    public void Pick_ColdAdapter_SameNodeEveryTime()
    {
        var nodes = Enumerable.Range(0, 5).Select(i => Node("n" + i)).ToArray();
        string first = PickId(nodes, "t/cold");
        for (int i = 0; i < 50; i++) Assert.Equal(first, PickId(nodes, "t/cold"));
    }

    [Fact]
    public void Pick_ManyColdAdapters_SpreadOverNodesAndMoveOnlyFromRemovedNode()
    {
        var nodes = Enumerable.Range(0, 4).Select(i => Node("n" + i)).ToArray();
        var placement = Enumerable.Range(0, 2000).ToDictionary(i => $"t/a{i}", i => PickId(nodes, $"t/a{i}"));
        foreach (var g in placement.GroupBy(p => p.Value)) Assert.InRange(g.Count(), 350, 650);

        var without = nodes.Where(n => n.Node.Id != "n2").ToArray();
        foreach (var (adapter, node) in placement)
        {
            string now = PickId(without, adapter);
            if (node != "n2") Assert.Equal(node, now);
            else Assert.NotEqual("n2", now);
        }
    }

    [Fact]
    public void Pick_ColdAdapterPreferredNodeOverBound_GoesToNextInItsOrder()
    {
        var idle = Enumerable.Range(0, 3).Select(i => Node("n" + i)).ToArray();
        string preferred = PickId(idle, "t/cold");
        var ranked = idle.OrderByDescending(n => AdapterScoring.RendezvousWeight("t/cold", n.Node.Id)).Select(n => n.Node.Id).ToArray();
        Assert.Equal(ranked[0], preferred);

        var loaded = idle.Select(n => n.Node.Id == preferred ? Node(n.Node.Id, running: 30) : n).ToArray();
        Assert.Equal(ranked[1], PickId(loaded, "t/cold"));

        // Equal load everywhere: the preferred node again.
        var allLoaded = idle.Select(n => Node(n.Node.Id, running: 30)).ToArray();
        Assert.Equal(preferred, PickId(allLoaded, "t/cold"));
    }

    [Fact]
    public void Pick_BaseModelRequests_SpreadBySpreadKey()
    {
        var nodes = Enumerable.Range(0, 3).Select(i => Node("n" + i)).ToArray();
        var chosen = Enumerable.Range(0, 300).Select(i => PickId(nodes, null, (ulong)i * 7919)).GroupBy(x => x).ToDictionary(g => g.Key, g => g.Count());
        Assert.Equal(3, chosen.Count);
        Assert.All(chosen.Values, c => Assert.InRange(c, 60, 140));
    }

    [Fact]
    public void Cost_MatchesDocumentedFormula()
    {
        var c = Node("n", host: ["t/x"], queue: 8, running: 8, kv: 0.5);
        double expected = Options.HostCost + Options.LoadWeight * (16 / 32.0) + Options.KvWeight * 0.5;
        Assert.Equal(expected, AdapterScoring.Cost(c, "t/x", Options), 12);
    }
}
