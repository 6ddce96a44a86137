using System.Collections.Concurrent;
using System.Diagnostics;
using Serving.AdapterStore.Compression;
using Serving.AdapterStore.Registry;
using Serving.AdapterStore.Storage;
using Serving.Contracts.Registry;
using StackExchange.Redis;

namespace Serving.RedisCluster.Tests;

/// <summary>
/// SIGKILL of a primary while uploads, reads, heartbeats and events flow: its replica takes over, no upload that was
/// acknowledged is lost, no reader ever sees a partial version, and every component works again afterwards.
/// </summary>
public sealed class ClusterFailoverTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(90);
    private const int Writers = 4;
    private const int Readers = 2;

    private sealed record Acked(string Tenant, string Name, long Version, string Checksum, int Slot);

    [Fact]
    public async Task Publish_PrimaryKilledDuringUploads_NoAcknowledgedUploadLostAndNoPartialVersionVisible()
    {
        using var cluster = new Serving.Tests.Shared.RedisCluster(primaries: 3, replicasPerPrimary: 1);
        await using var redis = await ConnectionMultiplexer.ConnectAsync(cluster.ConnectionString);
        // WaitReplicas = 1: a publish returns only once the commit is on the primary's replica (what makes it survive).
        var options = new AdapterStoreOptions { ChunkBytes = 1024, KeepVersions = 1000, WaitReplicas = 1 };
        var store = new RedisAdapterStore(redis, options);
        var registry = new NodeRegistry(redis, new RegistryKeys("fo"));
        var payloads = Enumerable.Range(0, 6).Select(ClusterStoreTests.Container).ToArray();
        var checksums = payloads.Select(p => AdapterContainer.ChecksumOf(p)).ToArray();
        var adapters = Enumerable.Range(0, 24).Select(i => (Tenant: $"t{i % 4}", Name: $"a{i}")).ToArray();

        var acked = new ConcurrentQueue<Acked>();
        var violations = new ConcurrentQueue<string>();
        var events = new ConcurrentQueue<AdapterEvent>();
        int failedPublishes = 0, failedReads = 0, reads = 0;
        string? lastFailure = null;
        string phase = "before the kill";
        using var stop = new CancellationTokenSource();
        await using var subscription = await store.SubscribeAsync(events.Enqueue, CancellationToken.None);

        async Task WriteAsync(int writer)
        {
            for (int i = 0; !stop.IsCancellationRequested; i++)
            {
                var (tenant, name) = adapters[(writer + i * Writers) % adapters.Length];
                int p = (writer + i) % payloads.Length;
                try
                {
                    var meta = await store.PublishAsync(ClusterStoreTests.Draft(tenant, name), payloads[p], null, CancellationToken.None);
                    acked.Enqueue(new Acked(tenant, name, meta.Version, checksums[p], redis.HashSlot(store.Keys.Meta(tenant, name, meta.Version))));
                    await registry.PublishHeartbeatAsync(ClusterStoreTests.Beat($"w{writer}"), TimeSpan.FromMinutes(5));
                }
                catch (StoreUnavailableException e)
                {
                    lastFailure = e.Message;
                    Interlocked.Increment(ref failedPublishes);
                    await Task.Delay(20); // back off while the shard is down; not a guess of how long it takes
                }
            }
        }

        async Task ReadAsync(int reader)
        {
            var rng = new Random(reader);
            while (!stop.IsCancellationRequested)
            {
                var all = acked.ToArray();
                if (all.Length == 0)
                {
                    await Task.Yield();
                    continue;
                }
                var a = all[rng.Next(all.Length)];
                try
                {
                    // A pinned acknowledged version, then whatever is current: both must verify completely.
                    var read = await store.ReadAsync(a.Tenant, a.Name, a.Version, CancellationToken.None);
                    if (read is null) violations.Enqueue($"acknowledged {a.Tenant}/{a.Name} v{a.Version} read as absent ({phase})");
                    else if (read.Metadata.Checksum != a.Checksum) violations.Enqueue($"{a.Tenant}/{a.Name} v{a.Version} has another payload");
                    _ = await store.ReadAsync(a.Tenant, a.Name, null, CancellationToken.None);
                    Interlocked.Increment(ref reads);
                }
                catch (StoreCorruptException e)
                {
                    violations.Enqueue($"partial or damaged version visible: {e.Message}");
                }
                catch (StoreUnavailableException)
                {
                    Interlocked.Increment(ref failedReads);
                    await Task.Delay(20);
                }
            }
        }

        var traffic = Enumerable.Range(0, Writers).Select(w => Task.Run(() => WriteAsync(w)))
            .Concat(Enumerable.Range(0, Readers).Select(r => Task.Run(() => ReadAsync(r)))).ToArray();
        try
        {
            await UntilAsync(() => acked.Count >= 40 && reads >= 20, "traffic before the kill");

            // The victim: the primary serving the registry's slot, which also serves some of the adapters.
            int victim = cluster.PrimaryPortOfSlot(redis.HashSlot(new RegistryKeys("fo").Index));
            var victimSlots = cluster.PrimariesWithSlots().Single(p => p.Port == victim).Slots;
            bool OnVictim(int slot) => victimSlots.Any(r => slot >= r.From && slot <= r.To);
            Assert.Contains(adapters, a => OnVictim(redis.HashSlot(store.Keys.Meta(a.Tenant, a.Name, 1))));
            int ackedBeforeKill = acked.Count;
            cluster.Kill(victim);
            phase = "after the kill";

            await Task.Run(cluster.WaitSettled);
            int replacement = cluster.PrimaryPortOfSlot(victimSlots[0].From);
            Assert.NotEqual(victim, replacement);
            // The promoted replica has no replica of its own, so nothing written there can be confirmed (WaitReplicas = 1)
            // until a new replica joins — what an operator replacing the crashed pod brings about.
            phase = "after the failover";
            await Task.Run(() => cluster.ReplaceWithNewReplica(victim));
            phase = "after the replacement";
            // Uploads to the failed-over slots are acknowledged again, and events flow again.
            int ackedAtSettle = acked.Count;
            await UntilAsync(() => acked.Skip(ackedAtSettle).Count(a => OnVictim(a.Slot)) >= 10, () => $"acknowledged uploads on the promoted replica (last failure: {lastFailure})");
            long lastVersion = acked.Skip(ackedAtSettle).Max(a => a.Version);
            await UntilAsync(() => events.Any(e => e.Op == "publish" && e.Version >= lastVersion), "an event for an upload after the failover");
            Assert.True(Volatile.Read(ref failedPublishes) > 0, "the kill interrupted uploads (otherwise the test proved nothing)");
            Assert.True(acked.Count > ackedBeforeKill);
        }
        finally
        {
            await stop.CancelAsync();
            await Task.WhenAll(traffic);
        }

        Assert.Empty(violations);
        // With a fresh client: every acknowledged version is there, intact; every pointer is at least the newest acknowledged version.
        await using var check = await ConnectionMultiplexer.ConnectAsync(cluster.ConnectionString);
        var after = new RedisAdapterStore(check, options);
        foreach (var a in acked)
        {
            var read = await after.ReadAsync(a.Tenant, a.Name, a.Version, CancellationToken.None);
            Assert.True(read is not null, $"acknowledged {a.Tenant}/{a.Name} v{a.Version} was lost");
            Assert.Equal(a.Checksum, AdapterContainer.ChecksumOf(read.Container));
        }
        foreach (var g in acked.GroupBy(a => (a.Tenant, a.Name)))
        {
            Assert.True((await after.GetMetadataAsync(g.Key.Tenant, g.Key.Name, null, CancellationToken.None))!.Version >= g.Max(a => a.Version));
        }
        foreach (var tenant in acked.Select(a => a.Tenant).Distinct())
        {
            var listed = (await after.ListAsync(tenant, CancellationToken.None)).Select(m => m.Name).ToHashSet();
            Assert.All(acked.Where(a => a.Tenant == tenant).Select(a => a.Name).Distinct(), n => Assert.Contains(n, listed));
        }
        // The registry (whose primary was the victim) reads every writer's heartbeat again.
        Assert.Equal(Enumerable.Range(0, Writers).Select(w => $"w{w}"), (await new NodeRegistry(check, new RegistryKeys("fo")).ReadAllAsync()).Select(b => b.NodeId).Order());
    }

    private static Task UntilAsync(Func<bool> condition, string what) => UntilAsync(condition, () => what);

    private static async Task UntilAsync(Func<bool> condition, Func<string> what)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(clock.Elapsed < Deadline, $"timed out waiting for {what()}");
            await Task.Delay(20);
        }
    }
}
