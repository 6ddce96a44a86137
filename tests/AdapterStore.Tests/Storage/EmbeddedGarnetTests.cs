using System.Globalization;
using Serving.AdapterStore.Compression;
using Serving.AdapterStore.Storage;
using StackExchange.Redis;

namespace Serving.AdapterStore.Tests.Storage;

/// <summary>The embedded server under adapter churn: nothing acknowledged is lost, memory and disk stay bounded.</summary>
public sealed class EmbeddedGarnetTests
{
    private static readonly CancellationToken Ct = CancellationToken.None;

    [Fact]
    public async Task Churn_PastThreeTimesTheMemoryBudget_KeepsTheFirstAdapterAndBoundsMemoryAndDisk()
    {
        // 16 MiB of log memory, 8 MiB segments, compaction every second once two segments are on disk.
        using var garnet = new EmbeddedGarnet(memory: "16m", compactionInterval: TimeSpan.FromSeconds(1), compactionSegments: 2);
        using var redis = await ConnectionMultiplexer.ConnectAsync(garnet.ConnectionString + ",allowAdmin=true");
        var store = new RedisAdapterStore(redis, new AdapterStoreOptions { KeepVersions = 1 });
        var db = redis.GetDatabase();

        // Acknowledged first: an adapter and a tenant-like hash, as the standalone host seeds them.
        var first = AdapterStoreContractTests.Container(7);
        await store.PublishAsync(Draft("first"), first, original: null, Ct);
        await db.HashSetAsync("tenants:dev", [new HashEntry("name", "Development tenant")]);

        // Churn through the store: 32 versions of a ~2 MiB adapter (two chunks each; two contents, alternating), every
        // publish deleting the version before it (KeepVersions = 1): about 64 MiB written.
        byte[][] versions = [.. Enumerable.Range(0, 2).Select(seed =>
            AdapterContainer.Encode(TestAdapters.Gpt2Lora(4, 256, 32, seed), new CodecOptions { Codec = AdapterCodec.Lossless }))];
        Assert.All(versions, v => Assert.True(v.Length > 3 << 19, $"a churned version should span two 1 MiB chunks, not {v.Length} bytes"));
        for (int i = 0; i < 32; i++) await store.PublishAsync(Draft("churn"), versions[i % 2], original: null, Ct);
        var payload = versions[1];

        var log = await LogInfoAsync(redis, garnet.Port);
        Assert.True(log["Log.TailAddress"] > 3 * (16L << 20), $"the log should have passed three times its memory budget; tail {log["Log.TailAddress"]}");
        // Pages are allocated up to the budget and reused; values above a page's half would live on the heap (none here).
        Assert.True(log["Log.CurrentMemorySizeBytes"] <= 16L << 20, $"log pages over the budget: {log["Log.CurrentMemorySizeBytes"]} bytes");
        Assert.True(log["Log.CurrentHeapSizeBytes"] < 1L << 20, $"log values on the heap: {log["Log.CurrentHeapSizeBytes"]} bytes");

        // Nothing acknowledged was dropped: the first adapter reads back verified (chunk hashes, checksum), byte for byte.
        var read = await store.ReadAsync(Tenant, "first", null, Ct);
        Assert.NotNull(read);
        Assert.Equal(first, read.Container);
        Assert.Equal("Development tenant", (string?)await db.HashGetAsync("tenants:dev", "name"));
        var last = await store.ReadAsync(Tenant, "churn", null, Ct);
        Assert.Equal(payload, last!.Container);
        Assert.Equal(32, last.Metadata.Version);

        // Compaction (every second) moves the live records forward and deletes the old segments: the folder ends near
        // two segments plus the live data (~2 MiB), far below the 64 MiB written. Polled, not slept: a loaded machine
        // may take a while to run the background task.
        long onDisk = long.MaxValue;
        for (var deadline = DateTime.UtcNow.AddSeconds(20); DateTime.UtcNow < deadline; await Task.Delay(100))
        {
            onDisk = Directory.EnumerateFiles(garnet.DataDirectory, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);
            if (onDisk <= 40L << 20) break;
        }
        Assert.True(onDisk <= 40L << 20, $"log files hold {onDisk >> 20} MiB after compaction");
        Assert.True((await LogInfoAsync(redis, garnet.Port))["Log.BeginAddress"] > 16L << 20, "compaction should have moved the log's begin forward");
        read = await store.ReadAsync(Tenant, "first", null, Ct);
        Assert.Equal(first, read!.Container);
    }

    [Theory]
    [InlineData("32m", 32L << 20)]
    [InlineData("1G", 1L << 30)]
    [InlineData("16777216", 16L << 20)]
    [InlineData("512k", 512L << 10)]
    [InlineData("", null)]
    [InlineData("m", null)]
    [InlineData("-5m", null)]
    [InlineData("1.5g", null)]
    [InlineData("12mb", null)]
    public void ParseSize_GarnetSizes_ReadAsBytesOrRefused(string text, long? bytes) => Assert.Equal(bytes, EmbeddedGarnet.ParseSize(text));

    [Theory]
    [InlineData(16L << 20, 8L << 20)]
    [InlineData(32L << 20, 16L << 20)]
    [InlineData(48L << 20, 16L << 20)]
    [InlineData(1L << 30, 512L << 20)]
    public void SegmentBytes_HalfTheMemoryAsAPowerOfTwo(long memory, long segment) => Assert.Equal(segment, EmbeddedGarnet.SegmentBytes(memory));

    [Theory]
    [InlineData("8m", 60, 8, "EmbeddedMemory")]
    [InlineData("lots", 60, 8, "EmbeddedMemory")]
    [InlineData("32m", 0, 8, "EmbeddedCompactionInterval")]
    [InlineData("32m", 1.5, 8, "EmbeddedCompactionInterval")]
    [InlineData("32m", 60, 1, "EmbeddedCompactionSegments")]
    public void Validate_BadEmbeddedSettings_NameTheKey(string memory, double intervalSeconds, int segments, string key)
    {
        var result = new AdapterStoreOptionsValidator().Validate(null, new AdapterStoreOptions
        {
            EmbeddedMemory = memory, EmbeddedCompactionInterval = TimeSpan.FromSeconds(intervalSeconds), EmbeddedCompactionSegments = segments,
        });
        Assert.True(result.Failed);
        Assert.Contains($"AdapterStore:{key}", result.FailureMessage, StringComparison.Ordinal);
        Assert.True(new AdapterStoreOptionsValidator().Validate(null, new AdapterStoreOptions()).Succeeded, "the defaults are valid");
    }

    private const string Tenant = "churn-test";

    private static AdapterMetadata Draft(string name) => new()
    {
        Tenant = Tenant, Name = name, BaseModel = "gpt2-test", Kind = AdapterKind.Lora, Codec = AdapterCodec.Lossless,
        Rank = 4, Targets = ["attn.c_attn"], Checksum = "",
    };

    /// <summary>The numeric <c>Log.*</c> fields of Garnet's <c>INFO store</c>.</summary>
    private static async Task<Dictionary<string, long>> LogInfoAsync(ConnectionMultiplexer redis, int port)
    {
        string text = (string)(await redis.GetServer("127.0.0.1", port).ExecuteAsync("INFO", "store"))!;
        var fields = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var line in text.Split('\n'))
        {
            var parts = line.Trim().Split(':', 2);
            if (parts.Length == 2 && parts[0].StartsWith("Log.", StringComparison.Ordinal)
                && long.TryParse(parts[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out long v)) fields[parts[0]] = v;
        }
        return fields;
    }
}
