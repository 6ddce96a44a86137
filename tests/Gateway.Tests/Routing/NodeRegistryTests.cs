using Serving.AdapterStore.Registry;
using Serving.Contracts.Registry;
using Serving.Gateway.Tests.Infrastructure;
using StackExchange.Redis;

namespace Serving.Gateway.Tests.Routing;

[Collection(RedisCollection.Name)]
public sealed class NodeRegistryTests(RedisFixture redis) : IAsyncLifetime
{
    private ConnectionMultiplexer _mux = null!;
    private NodeRegistry _registry = null!;

    public async Task InitializeAsync()
    {
        _mux = await ConnectionMultiplexer.ConnectAsync(redis.ConnectionString);
        _registry = new NodeRegistry(_mux, new RegistryKeys("r" + Guid.NewGuid().ToString("N")[..8]));
    }

    public async Task DisposeAsync() => await _mux.DisposeAsync();

    private static NodeHeartbeat Beat(string id) => new()
    {
        NodeId = id, BaseUrl = "http://127.0.0.1:1/", Model = "gpt2", Version = "1.2", StartedAt = DateTimeOffset.FromUnixTimeSeconds(1000),
        Adapters = new AdapterResidency { Device = ["a/x"], Host = ["a/y"], Loading = ["b/z"] },
        QueueDepth = 3, Running = 5, MaxRunning = 16, KvUsage = 0.25, Timestamp = DateTimeOffset.FromUnixTimeSeconds(2000),
    };

    [Fact]
    public async Task PublishHeartbeatAsync_ThenReadAll_RoundTripsEveryField()
    {
        var beat = Beat("n1");
        await _registry.PublishHeartbeatAsync(beat, TimeSpan.FromSeconds(10));
        var all = await _registry.ReadAllAsync();
        var read = Assert.Single(all);
        Assert.Equal(beat with { Adapters = read.Adapters }, read);
        Assert.Equal(beat.Adapters.Device, read.Adapters.Device);
        Assert.Equal(beat.Adapters.Host, read.Adapters.Host);
        Assert.Equal(beat.Adapters.Loading, read.Adapters.Loading);
    }

    [Fact]
    public async Task PublishHeartbeatAsync_KeyCarriesTtl_AndNodeVanishesAfterIt()
    {
        await _registry.PublishHeartbeatAsync(Beat("short"), TimeSpan.FromMilliseconds(300));
        var ttl = await _mux.GetDatabase().KeyTimeToLiveAsync(_registry.Keys.Node("short"));
        Assert.NotNull(ttl);
        Assert.InRange(ttl!.Value, TimeSpan.FromMilliseconds(1), TimeSpan.FromMilliseconds(300));
        var deadline = DateTime.UtcNow.AddSeconds(5);
        while ((await _registry.ReadAllAsync()).Count > 0)
        {
            Assert.True(DateTime.UtcNow < deadline, "node still listed long after its TTL");
            await Task.Delay(50);
        }
    }

    [Fact]
    public async Task SubscribeAsync_ReceivesHeartbeatsAndDepartures()
    {
        var got = new List<NodeRegistryEvent>();
        var two = new TaskCompletionSource();
        await using (await _registry.SubscribeAsync(e =>
        {
            lock (got)
            {
                got.Add(e);
                if (got.Count == 2) two.TrySetResult();
            }
        }))
        {
            await _registry.PublishHeartbeatAsync(Beat("n2"), TimeSpan.FromSeconds(10));
            await _registry.RemoveAsync("n2");
            await two.Task.WaitAsync(TimeSpan.FromSeconds(5));
        }
        Assert.Equal("n2", got[0].NodeId);
        Assert.Equal(5, got[0].Heartbeat!.Running);
        Assert.Null(got[1].Heartbeat);
        Assert.Empty(await _registry.ReadAllAsync());
    }

    [Fact]
    public async Task HeartbeatPublisher_PublishesWhileRunning_RemovesOnStop()
    {
        int beats = 0;
        var publisher = new HeartbeatPublisher(_registry, () => Beat("pub") with { Running = Interlocked.Increment(ref beats) },
            TimeSpan.FromMilliseconds(50), TimeSpan.FromSeconds(10));
        await publisher.StartAsync(CancellationToken.None);
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (Volatile.Read(ref beats) < 3)
        {
            Assert.True(DateTime.UtcNow < deadline, "publisher did not beat");
            await Task.Delay(20);
        }
        var live = Assert.Single(await _registry.ReadAllAsync());
        Assert.Equal("pub", live.NodeId);
        Assert.True(live.Running >= 2);
        await publisher.StopAsync(CancellationToken.None);
        Assert.Empty(await _registry.ReadAllAsync());
    }

    [Theory]
    [InlineData("not json")]
    [InlineData("{\"base_url\":\"x\"}")]
    [InlineData("{\"node_id\":\"n\",\"base_url\":\"http://x/\"}")]
    [InlineData("[]")]
    public void TryParse_Malformed_False(string json) => Assert.False(NodeRegistry.TryParse(json, out _));

    private static readonly DateTimeOffset WatcherEpoch = DateTimeOffset.FromUnixTimeSeconds(5000);

    /// <summary>A registry watcher that is never started: tests feed it full reads and announcements directly.</summary>
    private Serving.Gateway.Routing.RegistryWatcher Watcher() => new(_registry,
        Microsoft.Extensions.Options.Options.Create(new Serving.Gateway.Routing.RoutingOptions()), TimeProvider.System,
        Microsoft.Extensions.Logging.Abstractions.NullLogger<Serving.Gateway.Routing.RegistryWatcher>.Instance);

    [Fact]
    public void Watcher_FullReadOlderThanAnAppliedAnnouncement_KeepsTheNewerHeartbeat()
    {
        // A full read started before a node's newer announcement and applied after it must not roll the view back to the
        // older heartbeat (its queue depth, its resident adapters); membership still follows the read.
        var watcher = Watcher();
        var t0 = WatcherEpoch;
        NodeHeartbeat At(string id, int seconds, int queue) => Beat(id) with { Timestamp = t0.AddSeconds(seconds), QueueDepth = queue };

        watcher.Replace([At("a", 0, 1), At("b", 0, 1)]);
        watcher.OnEvent(new NodeRegistryEvent("a", At("a", 5, 7)));
        watcher.Replace([At("a", 3, 2), At("b", 3, 2)]); // read before a's announcement, applied after it
        Assert.Equal(7, watcher.Current.Nodes["a"].Heartbeat.QueueDepth);
        Assert.Equal(2, watcher.Current.Nodes["b"].Heartbeat.QueueDepth);

        watcher.Merge([At("a", 4, 3)]);
        Assert.Equal(7, watcher.Current.Nodes["a"].Heartbeat.QueueDepth);
        watcher.Replace([At("a", 6, 4)]); // a newer read wins, and b, absent from it, is gone
        Assert.Equal(4, watcher.Current.Nodes["a"].Heartbeat.QueueDepth);
        Assert.Equal(["a"], watcher.Current.Nodes.Keys.Order());

        // a restarted on a host whose clock is behind: its beats are older by timestamp but of a new run — taken.
        watcher.Replace([At("a", 2, 5) with { StartedAt = t0.AddSeconds(1) }]);
        Assert.Equal(5, watcher.Current.Nodes["a"].Heartbeat.QueueDepth);
    }

    [Fact]
    public void Watcher_LateAnnouncementOfANodeThatLeft_DoesNotBringItBack_ANewerOneDoes()
    {
        // Pub/sub can deliver a heartbeat after the full read that dropped its (expired) node; a CI run saw the gateway
        // route to a killed node that way. Only a heartbeat newer than the last one the view held counts as a return.
        var watcher = Watcher();
        var t0 = WatcherEpoch;
        NodeHeartbeat At(string id, int seconds) => Beat(id) with { Timestamp = t0.AddSeconds(seconds) };

        watcher.Replace([At("a", 0), At("b", 0)]);
        watcher.OnEvent(new NodeRegistryEvent("b", At("b", 1)));
        watcher.Replace([At("a", 2)]); // b's key expired
        Assert.Equal(["a"], watcher.Current.Nodes.Keys.Order());

        watcher.OnEvent(new NodeRegistryEvent("b", At("b", 1))); // its last heartbeat, delivered late
        watcher.OnEvent(new NodeRegistryEvent("b", At("b", 0))); // and an older one
        Assert.Equal(["a"], watcher.Current.Nodes.Keys.Order());

        watcher.OnEvent(new NodeRegistryEvent("b", At("b", 9))); // b restarted and beats again
        Assert.Equal(["a", "b"], watcher.Current.Nodes.Keys.Order());

        // A deregistration, then a late heartbeat from before it: still gone.
        watcher.OnEvent(new NodeRegistryEvent("b", null));
        watcher.OnEvent(new NodeRegistryEvent("b", At("b", 8)));
        Assert.Equal(["a"], watcher.Current.Nodes.Keys.Order());

        // A node never seen before joins on its first announcement.
        watcher.OnEvent(new NodeRegistryEvent("c", At("c", 0)));
        Assert.Contains("c", watcher.Current.Nodes.Keys);
    }
}
