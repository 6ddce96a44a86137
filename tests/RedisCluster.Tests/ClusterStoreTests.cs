using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.Extensions.Options;
using Serving.AdapterStore;
using Serving.AdapterStore.Compression;
using Serving.AdapterStore.Registry;
using Serving.AdapterStore.Storage;
using Serving.AdapterStore.Tests;
using Serving.Contracts.Registry;
using Serving.Gateway.Tenancy;
using Serving.Tests.Shared;
using StackExchange.Redis;

namespace Serving.RedisCluster.Tests;

/// <summary>One 3-primary, 3-replica cluster for the class (nothing here kills a node).</summary>
public sealed class ClusterFixture : IDisposable
{
    public Serving.Tests.Shared.RedisCluster Cluster { get; } = new(primaries: 3, replicasPerPrimary: 1);

    public void Dispose() => Cluster.Dispose();
}

/// <summary>The adapter store, the node registry and the gateway's key store against a real Redis Cluster.</summary>
public sealed class ClusterStoreTests(ClusterFixture fixture) : IClassFixture<ClusterFixture>, IAsyncLifetime
{
    private static readonly CancellationToken Ct = CancellationToken.None;
    private static readonly TimeSpan EventDeadline = TimeSpan.FromSeconds(30);
    private readonly string _tenant = "t" + Guid.NewGuid().ToString("N")[..10];
    private ConnectionMultiplexer _redis = null!;

    public async Task InitializeAsync() => _redis = await ConnectionMultiplexer.ConnectAsync(fixture.Cluster.ConnectionString);

    public async Task DisposeAsync() => await _redis.DisposeAsync();

    internal static byte[] Container(int seed) =>
        AdapterContainer.Encode(TestAdapters.Gpt2Lora(2, 32, 4, seed), new CodecOptions { Codec = AdapterCodec.Lossless });

    internal static AdapterMetadata Draft(string tenant, string name) => new()
    {
        Tenant = tenant, Name = name, BaseModel = "gpt2-test", Kind = AdapterKind.Lora, Codec = AdapterCodec.Lossless, Rank = 4, Targets = ["attn.c_attn"], Checksum = "",
    };

    private RedisAdapterStore Store(KeyLayout layout = KeyLayout.PerAdapter, int waitReplicas = 0, string prefix = AdapterStoreOptions.DefaultKeyPrefix) =>
        new(_redis, new AdapterStoreOptions { KeyPrefix = prefix, ChunkBytes = 1024, KeepVersions = 3, KeyLayout = layout, WaitReplicas = waitReplicas });

    [Fact]
    public void Cluster_HasThreePrimariesEachWithAReplica()
    {
        Assert.True(_redis.GetServers().Length >= 6, "the client sees every node");
        Assert.Equal(3, fixture.Cluster.PrimariesWithSlots().Count);
        Assert.Equal(3, _redis.GetServers().Count(s => s.IsConnected && !s.IsReplica));
    }

    [Fact]
    public async Task PublishReadListDelete_OnCluster_EveryArtifactInOneSlotAndRoundTrips()
    {
        var store = Store();
        var names = Enumerable.Range(0, 12).Select(i => $"a{i}").ToList();
        foreach (var (name, i) in names.Select((n, i) => (n, i)))
        {
            var meta = await store.PublishAsync(Draft(_tenant, name), Container(i), original: [1, 2, (byte)i], Ct);
            Assert.True(meta.Chunks > 1, "the payload spans several chunks, so the commit names several keys");
            // Every key the commit touches hashes to one slot (the client refuses a cross-slot script otherwise).
            int slot = _redis.HashSlot(store.Keys.Meta(_tenant, name, 1));
            Assert.Equal(slot, _redis.HashSlot(store.Keys.Current(_tenant, name)));
            Assert.Equal(slot, _redis.HashSlot(store.Keys.Chunk(_tenant, name, 1, meta.Chunks - 1)));
            Assert.Equal(slot, _redis.HashSlot(store.Keys.OriginalChunk(_tenant, name, 1, 0)));
        }
        foreach (var (name, i) in names.Select((n, i) => (n, i)))
        {
            var read = await store.ReadAsync(_tenant, name, null, Ct);
            Assert.Equal(Container(i), read!.Container);
            Assert.Equal(new byte[] { 1, 2, (byte)i }, await store.ReadOriginalAsync(_tenant, name, 1, Ct));
        }
        Assert.Equal(names.Order(StringComparer.Ordinal), (await store.ListAsync(_tenant, Ct)).Select(m => m.Name));
        // The artifacts landed on more than one primary: the tenant is not pinned to a shard.
        Assert.True(names.Select(n => fixture.Cluster.PrimaryPortOfSlot(_redis.HashSlot(store.Keys.Meta(_tenant, n, 1)))).Distinct().Count() > 1);

        await store.PublishAsync(Draft(_tenant, "a0"), Container(100), null, Ct);
        Assert.True(await store.DeleteAsync(_tenant, "a0", 2, Ct));
        Assert.Equal(1, (await store.GetMetadataAsync(_tenant, "a0", null, Ct))!.Version);
        Assert.True(await store.DeleteAsync(_tenant, "a0", null, Ct));
        Assert.Null(await store.ReadAsync(_tenant, "a0", null, Ct));
        Assert.DoesNotContain("a0", (await store.ListAsync(_tenant, Ct)).Select(m => m.Name));
        Assert.False(await _redis.GetDatabase().SetContainsAsync(store.Keys.Index(_tenant), "a0"));
    }

    [Fact]
    public async Task KeyLayout_OneLargeTenant_PerAdapterSpreadsOverEveryPrimaryPerTenantUsesOne()
    {
        string prefix = "lay" + Guid.NewGuid().ToString("N")[..6];
        var perAdapter = Store(KeyLayout.PerAdapter, prefix: prefix + "a");
        var perTenant = Store(KeyLayout.PerTenant, prefix: prefix + "t");
        var container = Container(7);
        for (int i = 0; i < 30; i++)
        {
            await perAdapter.PublishAsync(Draft(_tenant, $"n{i}"), container, null, Ct);
            await perTenant.PublishAsync(Draft(_tenant, $"n{i}"), container, null, Ct);
        }
        // Where the keys really are: SCAN every primary for each layout's keys of the tenant.
        var primaries = _redis.GetServers().Where(s => s.IsConnected && !s.IsReplica).ToList();
        var adapterKeys = primaries.Select(s => s.Keys(pattern: perAdapter.Keys.TenantPattern(_tenant), pageSize: 1000).Count()).ToList();
        var tenantKeys = primaries.Select(s => s.Keys(pattern: perTenant.Keys.TenantPattern(_tenant), pageSize: 1000).Count()).ToList();
        Assert.Equal(adapterKeys.Sum(), tenantKeys.Sum());
        Assert.All(adapterKeys, n => Assert.True(n > 0, $"per-adapter keys per primary: {string.Join(", ", adapterKeys)}"));
        Assert.Equal(1, tenantKeys.Count(n => n > 0));
        // Both layouts read back what was written.
        Assert.Equal(container, (await perAdapter.ReadAsync(_tenant, "n29", null, Ct))!.Container);
        Assert.Equal(container, (await perTenant.ReadAsync(_tenant, "n29", null, Ct))!.Container);
        Assert.Equal(30, (await perAdapter.ListAsync(_tenant, Ct)).Count);
    }

    [Fact]
    public async Task Subscribe_OnCluster_EventPublishedThroughAnotherConnectionArrives()
    {
        await using var other = await ConnectionMultiplexer.ConnectAsync(fixture.Cluster.ConnectionString);
        var writer = new RedisAdapterStore(other, new AdapterStoreOptions { ChunkBytes = 1024 });
        var events = new ConcurrentQueue<AdapterEvent>();
        var seen = new SemaphoreSlim(0);
        await using (await Store().SubscribeAsync(e =>
        {
            if (e.Tenant != _tenant) return;
            events.Enqueue(e);
            seen.Release();
        }, Ct))
        {
            await writer.PublishAsync(Draft(_tenant, "ev"), Container(1), null, Ct);
            Assert.True(await seen.WaitAsync(EventDeadline), "publish event");
            await writer.DeleteAsync(_tenant, "ev", null, Ct);
            Assert.True(await seen.WaitAsync(EventDeadline), "delete event");
        }
        Assert.Equal([("publish", 1L, 1L), ("delete", 1L, 0L)], events.Select(e => (e.Op, e.Version, e.Current)));
    }

    [Fact]
    public async Task WaitReplicas_OnCluster_ConfirmedByTheReplicaOrRefusedWhenTooFew()
    {
        var confirmed = await Store(waitReplicas: 1).PublishAsync(Draft(_tenant, "durable"), Container(1), null, Ct);
        Assert.Equal(1, confirmed.Version);
        // Each primary has one replica: asking for two cannot be met, and the publish says so.
        var strict = new RedisAdapterStore(_redis, new AdapterStoreOptions { ChunkBytes = 1024, WaitReplicas = 2, WaitReplicasTimeout = TimeSpan.FromMilliseconds(200) });
        var e = await Assert.ThrowsAsync<StoreUnavailableException>(() => strict.PublishAsync(Draft(_tenant, "durable"), Container(2), null, Ct));
        Assert.Contains("1 of 2 replicas", e.Message);
    }

    [Fact]
    public async Task Registry_OnCluster_HeartbeatsReadBackAnnouncedAndRemoved()
    {
        var keys = new RegistryKeys("r" + Guid.NewGuid().ToString("N")[..8]);
        var registry = new NodeRegistry(_redis, keys);
        var announced = new ConcurrentQueue<NodeRegistryEvent>();
        var got = new SemaphoreSlim(0);
        await using (await registry.SubscribeAsync(e =>
        {
            announced.Enqueue(e);
            got.Release();
        }))
        {
            for (int i = 0; i < 5; i++) await registry.PublishHeartbeatAsync(Beat($"n{i}"), TimeSpan.FromSeconds(30));
            // One MGET over every heartbeat: possible on a cluster only because the registry's keys share a slot.
            Assert.Equal(Enumerable.Range(0, 5).Select(i => $"n{i}"), (await registry.ReadAllAsync()).Select(b => b.NodeId).Order());
            for (int i = 0; i < 5; i++) Assert.True(await got.WaitAsync(EventDeadline), $"announcement {i}");

            // A node's hosted publisher joins, then leaves on stop.
            var publisher = new HeartbeatPublisher(registry, () => Beat("hosted"), TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(30));
            await publisher.StartAsync(Ct);
            await PollAsync(async () => (await registry.ReadAllAsync()).Any(b => b.NodeId == "hosted"), "the hosted publisher's heartbeat");
            await publisher.StopAsync(Ct);
            Assert.DoesNotContain("hosted", (await registry.ReadAllAsync()).Select(b => b.NodeId));
            await PollAsync(() => Task.FromResult(announced.Any(e => e.NodeId == "hosted" && e.Heartbeat is null)), "the departure announcement");
        }
    }

    [Fact]
    public async Task ApiKeys_OnCluster_IssueVerifyListRevoke()
    {
        string prefix = "gw" + Guid.NewGuid().ToString("N")[..6];
        var keys = new ApiKeyStore(_redis, Options.Create(new TenancyOptions { KeyPrefix = prefix, CacheTtl = TimeSpan.Zero }), TimeProvider.System);
        await keys.CreateTenantAsync(_tenant, "Cluster tenant", Ct);
        // Issuing a key is one MULTI/EXEC over three keys: one slot on a cluster thanks to the {prefix} tag.
        var (secret, record) = await keys.CreateKeyAsync(_tenant, ApiKeyRoles.Tenant, Ct);
        Assert.Equal(_tenant, (await keys.VerifyAsync(secret, Ct))!.Tenant);
        Assert.Equal([record.KeyId], (await keys.ListKeysAsync(_tenant, Ct)).Select(k => k.KeyId));
        Assert.Contains(_tenant, (await keys.ListTenantsAsync(Ct)).Select(t => t.Id));
        Assert.True(await keys.RevokeKeyAsync(_tenant, record.KeyId, Ct));
        Assert.Null(await keys.VerifyAsync(secret, Ct));
    }

    internal static NodeHeartbeat Beat(string id) => new()
    {
        NodeId = id, BaseUrl = "http://127.0.0.1:1/", Model = "gpt2", Version = "1", StartedAt = DateTimeOffset.UnixEpoch,
        Adapters = new AdapterResidency(), QueueDepth = 0, Running = 0, MaxRunning = 8, KvUsage = 0, Timestamp = DateTimeOffset.UnixEpoch,
    };

    private static async Task PollAsync(Func<Task<bool>> condition, string what)
    {
        var clock = Stopwatch.StartNew();
        while (!await condition())
        {
            Assert.True(clock.Elapsed < EventDeadline, $"timed out waiting for {what}");
            await Task.Delay(20);
        }
    }
}
