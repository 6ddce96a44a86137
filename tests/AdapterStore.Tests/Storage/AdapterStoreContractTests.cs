using System.IO.Hashing;
using Serving.AdapterStore.Compression;
using Serving.AdapterStore.Storage;
using StackExchange.Redis;

namespace Serving.AdapterStore.Tests.Storage;

/// <summary>The store's behaviour, run once against redis-server and once against embedded Garnet.</summary>
public abstract class AdapterStoreContractTests : IDisposable
{
    private readonly ConnectionMultiplexer _redis;
    protected readonly RedisAdapterStore Store;
    protected readonly string Tenant = "t" + Guid.NewGuid().ToString("N")[..12];
    private static readonly CancellationToken Ct = CancellationToken.None;

    protected AdapterStoreContractTests(IStoreServer server)
    {
        _redis = ConnectionMultiplexer.Connect(server.ConnectionString);
        Store = new RedisAdapterStore(_redis, new AdapterStoreOptions { ChunkBytes = 4096, KeepVersions = 3 });
    }

    public void Dispose() => _redis.Dispose();

    internal static byte[] Container(int seed) =>
        AdapterContainer.Encode(TestAdapters.Gpt2Lora(2, 32, 4, seed), new CodecOptions { Codec = AdapterCodec.Lossless });

    internal AdapterMetadata Draft(string name) => new()
    {
        Tenant = Tenant, Name = name, BaseModel = "gpt2-test", Kind = AdapterKind.Lora, Codec = AdapterCodec.Lossless,
        Rank = 4, Targets = ["attn.c_attn"], Checksum = "",
    };

    [Fact]
    public async Task Publish_ThenRead_ReturnsVerifiedBytesAndMetadata()
    {
        var bytes = Container(1);
        var meta = await Store.PublishAsync(Draft("a1"), bytes, original: [1, 2, 3], Ct);
        Assert.Equal(1, meta.Version);
        Assert.True(meta.Chunks > 1, "payload should span several 4 KiB chunks");
        var read = await Store.ReadAsync(Tenant, "a1", null, Ct);
        Assert.NotNull(read);
        Assert.Equal(bytes, read.Container);
        Assert.Equal(AdapterContainer.ChecksumOf(bytes), read.Metadata.Checksum);
        Assert.Equal(["attn.c_attn"], read.Metadata.Targets);
        Assert.Equal(new byte[] { 1, 2, 3 }, await Store.ReadOriginalAsync(Tenant, "a1", 1, Ct));
        Assert.Single(await Store.ListAsync(Tenant, Ct));
    }

    [Fact]
    public async Task Read_OtherTenant_SeesNothing()
    {
        await Store.PublishAsync(Draft("mine"), Container(1), null, Ct);
        string other = Tenant + "x";
        Assert.Null(await Store.GetMetadataAsync(other, "mine", null, Ct));
        Assert.Null(await Store.ReadAsync(other, "mine", 1, Ct));
        Assert.Empty(await Store.ListAsync(other, Ct));
        Assert.False(await Store.DeleteAsync(other, "mine", null, Ct));
        Assert.NotNull(await Store.GetMetadataAsync(Tenant, "mine", null, Ct));
    }

    [Fact]
    public async Task Publish_Twice_MovesPointerAndKeepsOldVersion()
    {
        await Store.PublishAsync(Draft("a2"), Container(1), null, Ct);
        await Store.PublishAsync(Draft("a2"), Container(2), null, Ct);
        Assert.Equal(2, (await Store.GetMetadataAsync(Tenant, "a2", null, Ct))!.Version);
        Assert.Equal(Container(1), (await Store.ReadAsync(Tenant, "a2", 1, Ct))!.Container);
        Assert.Equal([1L, 2L], (await Store.ListVersionsAsync(Tenant, "a2", Ct)).Select(m => m.Version));
    }

    [Fact]
    public async Task Publish_Concurrently_GivesConsecutiveVersionsWithoutLoss()
    {
        var store = new RedisAdapterStore(_redis, new AdapterStoreOptions { ChunkBytes = 4096, KeepVersions = 100 });
        var tasks = Enumerable.Range(0, 8).Select(i => Task.Run(() => store.PublishAsync(Draft("conc"), Container(i), null, Ct))).ToArray();
        var metas = await Task.WhenAll(tasks);
        Assert.Equal(Enumerable.Range(1, 8).Select(i => (long)i), metas.Select(m => m.Version).Order());
        Assert.Equal(8, (await store.GetMetadataAsync(Tenant, "conc", null, Ct))!.Version);
        var versions = await store.ListVersionsAsync(Tenant, "conc", Ct);
        Assert.Equal(8, versions.Count);
        foreach (var m in metas)
        {
            var read = await store.ReadAsync(Tenant, "conc", m.Version, Ct);
            Assert.Equal(m.Checksum, read!.Metadata.Checksum);
        }
    }

    [Fact]
    public async Task Read_CorruptedChunk_ThrowsNamingTheChunk()
    {
        var meta = await Store.PublishAsync(Draft("bad"), Container(3), null, Ct);
        var db = _redis.GetDatabase();
        string key = Store.Keys.Chunk(Tenant, "bad", meta.Version, 1);
        byte[] chunk = (byte[])(await db.StringGetAsync(key))!;
        chunk[100] ^= 0xFF;
        await db.StringSetAsync(key, chunk);
        var e = await Assert.ThrowsAsync<StoreCorruptException>(() => Store.ReadAsync(Tenant, "bad", null, Ct));
        Assert.Contains("chunk 1", e.Message);
        Assert.Contains("corrupted", e.Message);
    }

    [Fact]
    public async Task Read_VersionDeletedConcurrently_IsAbsentNotCorrupt()
    {
        var meta = await Store.PublishAsync(Draft("race"), Container(3), null, Ct);
        // The delete lands between the metadata read and the chunk read.
        Store.BeforeChunksRead = () => Store.DeleteAsync(Tenant, "race", meta.Version, Ct);
        Assert.Null(await Store.ReadAsync(Tenant, "race", meta.Version, Ct));
        Store.BeforeChunksRead = null;
    }

    [Fact]
    public async Task Read_MissingChunk_ThrowsClearError()
    {
        var meta = await Store.PublishAsync(Draft("gone"), Container(3), null, Ct);
        await _redis.GetDatabase().KeyDeleteAsync(Store.Keys.Chunk(Tenant, "gone", meta.Version, 0));
        var e = await Assert.ThrowsAsync<StoreCorruptException>(() => Store.ReadAsync(Tenant, "gone", null, Ct));
        Assert.Contains("missing", e.Message);
    }

    [Fact]
    public async Task Publish_WriterFailsMidway_LeavesNoVisibleVersionAndStagedChunksExpire()
    {
        await Store.PublishAsync(Draft("half"), Container(1), null, Ct);
        Store.AfterChunkWritten = i => i == 2 ? throw new IOException("writer died") : Task.CompletedTask;
        await Assert.ThrowsAsync<IOException>(() => Store.PublishAsync(Draft("half"), Container(2), null, Ct));
        Store.AfterChunkWritten = null;
        Assert.Equal(1, (await Store.GetMetadataAsync(Tenant, "half", null, Ct))!.Version);
        Assert.Null(await Store.GetMetadataAsync(Tenant, "half", 2, Ct));
        Assert.Single(await Store.ListVersionsAsync(Tenant, "half", Ct));
        Assert.Equal(Container(1), (await Store.ReadAsync(Tenant, "half", null, Ct))!.Container);
        var ttl = await _redis.GetDatabase().KeyTimeToLiveAsync(Store.Keys.Chunk(Tenant, "half", 2, 0));
        Assert.NotNull(ttl);
        Assert.Null(await _redis.GetDatabase().KeyTimeToLiveAsync(Store.Keys.Chunk(Tenant, "half", 1, 0)));
    }

    [Fact]
    public async Task Delete_CurrentVersion_MovesPointerBack_ThenDeleteAllRemovesFromIndex()
    {
        await Store.PublishAsync(Draft("del"), Container(1), null, Ct);
        await Store.PublishAsync(Draft("del"), Container(2), null, Ct);
        Assert.True(await Store.DeleteAsync(Tenant, "del", 2, Ct));
        Assert.Equal(1, (await Store.GetMetadataAsync(Tenant, "del", null, Ct))!.Version);
        Assert.False(await Store.DeleteAsync(Tenant, "del", 2, Ct));
        Assert.True(await Store.DeleteAsync(Tenant, "del", null, Ct));
        Assert.Null(await Store.GetMetadataAsync(Tenant, "del", null, Ct));
        Assert.Empty(await Store.ListAsync(Tenant, Ct));
        Assert.False(await _redis.GetDatabase().KeyExistsAsync(Store.Keys.Chunk(Tenant, "del", 1, 0)));
    }

    [Fact]
    public async Task Publish_BeyondKeepVersions_DeletesOldest()
    {
        for (int i = 0; i < 5; i++) await Store.PublishAsync(Draft("many"), Container(i), null, Ct);
        Assert.Equal([3L, 4L, 5L], (await Store.ListVersionsAsync(Tenant, "many", Ct)).Select(m => m.Version));
        Assert.False(await _redis.GetDatabase().KeyExistsAsync(Store.Keys.Chunk(Tenant, "many", 1, 0)));
    }

    [Fact]
    public async Task Subscribe_ReceivesPublishAndDeleteEvents()
    {
        var events = new System.Collections.Concurrent.ConcurrentQueue<AdapterEvent>();
        var twoSeen = new TaskCompletionSource();
        await using (await Store.SubscribeAsync(e =>
        {
            if (e.Tenant != Tenant) return;
            events.Enqueue(e);
            if (events.Count == 2) twoSeen.TrySetResult();
        }, Ct))
        {
            await Store.PublishAsync(Draft("ev"), Container(1), null, Ct);
            await Store.DeleteAsync(Tenant, "ev", 1, Ct);
            await twoSeen.Task.WaitAsync(TimeSpan.FromSeconds(10));
        }
        Assert.Equal(["publish", "delete"], events.Select(e => e.Op));
        Assert.All(events, e => Assert.Equal(1, e.Version));
        Assert.Equal(0, events.Last().Current);
    }
}

public sealed class RedisAdapterStoreTests(RedisFixture server) : AdapterStoreContractTests(server), IClassFixture<RedisFixture>;

public sealed class GarnetAdapterStoreTests(GarnetFixture server) : AdapterStoreContractTests(server), IClassFixture<GarnetFixture>;

/// <summary>Crash of the server itself in the middle of an upload (redis-server with an fsync'd AOF, restarted on the same data).</summary>
public sealed class ServerCrashTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("adp-aof-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task Publish_ServerKilledMidUpload_LeavesNoVisiblePartialVersion()
    {
        using var server = new RedisServerProcess("--appendonly", "yes", "--appendfsync", "always", "--dir", _dir);
        string tenant = "crash";
        // Short timeouts: after the kill the client fails fast instead of waiting out the defaults.
        using (var redis = await ConnectionMultiplexer.ConnectAsync(server.ConnectionString + ",asyncTimeout=1000,syncTimeout=1000,connectRetry=0"))
        {
            var store = new RedisAdapterStore(redis, new AdapterStoreOptions { ChunkBytes = 4096 });
            var draft = new AdapterMetadata { Tenant = tenant, Name = "x", BaseModel = "b", Checksum = "" };
            await store.PublishAsync(draft, AdapterStoreContractTests.Container(1), null, CancellationToken.None);
            store.AfterChunkWritten = i =>
            {
                if (i == 2) server.Kill();
                return Task.CompletedTask;
            };
            await Assert.ThrowsAnyAsync<Exception>(() => store.PublishAsync(draft, AdapterStoreContractTests.Container(2), null, CancellationToken.None));
        }
        server.Restart();
        using (var redis = await ConnectionMultiplexer.ConnectAsync(server.ConnectionString))
        {
            var store = new RedisAdapterStore(redis, new AdapterStoreOptions { ChunkBytes = 4096 });
            var db = redis.GetDatabase();
            Assert.True(await db.KeyExistsAsync(store.Keys.Chunk(tenant, "x", 2, 0)), "the staged chunk survived the crash (AOF), so the test exercises invisibility");
            Assert.Equal(1, (await store.GetMetadataAsync(tenant, "x", null, CancellationToken.None))!.Version);
            Assert.Null(await store.GetMetadataAsync(tenant, "x", 2, CancellationToken.None));
            Assert.Single(await store.ListVersionsAsync(tenant, "x", CancellationToken.None));
            Assert.Equal(AdapterStoreContractTests.Container(1), (await store.ReadAsync(tenant, "x", null, CancellationToken.None))!.Container);
            Assert.NotNull(await db.KeyTimeToLiveAsync(store.Keys.Chunk(tenant, "x", 2, 0)));
        }
    }
}
