using System.IO.Hashing;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Serving.AdapterStore.Compression;
using StackExchange.Redis;

namespace Serving.AdapterStore.Storage;

/// <summary>
/// <see cref="IAdapterStore"/> over StackExchange.Redis; the same code talks to redis-server and to embedded Garnet.
/// </summary>
public sealed partial class RedisAdapterStore : IAdapterStore
{
    private readonly IConnectionMultiplexer _redis;
    private readonly AdapterStoreOptions _options;
    private readonly AdapterKeys _keys;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;

    /// <summary>Test hook: runs after each staged chunk is written (used to kill the server mid-upload).</summary>
    internal Func<int, Task>? AfterChunkWritten { get; set; }

    /// <summary>Test hook: runs between the metadata read and the chunk read.</summary>
    internal Func<Task>? BeforeChunksRead { get; set; }

    /// <summary>Creates a store over an open connection.</summary>
    public RedisAdapterStore(IConnectionMultiplexer redis, AdapterStoreOptions options, TimeProvider? time = null, ILogger<RedisAdapterStore>? logger = null)
    {
        AdapterStoreOptionsValidator.Check(options);
        _redis = redis;
        _options = options;
        _keys = new AdapterKeys(options.KeyPrefix);
        _time = time ?? TimeProvider.System;
        _logger = (ILogger?)logger ?? NullLogger.Instance;
    }

    /// <summary>The key layout in use.</summary>
    public AdapterKeys Keys => _keys;

    private IDatabase Db => _redis.GetDatabase();

    private const string What = "The adapter store (Redis)";

    /// <inheritdoc />
    public Task<AdapterMetadata> PublishAsync(AdapterMetadata draft, byte[] container, byte[]? original, CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, () => PublishCoreAsync(draft, container, original, cancellationToken));

    /// <inheritdoc />
    public Task<AdapterMetadata?> GetMetadataAsync(string tenant, string name, long? version, CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, () => GetMetadataCoreAsync(tenant, name, version, cancellationToken));

    /// <inheritdoc />
    public Task<IReadOnlyList<AdapterMetadata>> ListAsync(string tenant, CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, () => ListCoreAsync(tenant, cancellationToken));

    /// <inheritdoc />
    public Task<IReadOnlyList<AdapterMetadata>> ListVersionsAsync(string tenant, string name, CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, () => ListVersionsCoreAsync(tenant, name, cancellationToken));

    /// <inheritdoc />
    public Task<StoredAdapter?> ReadAsync(string tenant, string name, long? version, CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, () => ReadCoreAsync(tenant, name, version, cancellationToken));

    /// <inheritdoc />
    public Task<byte[]?> ReadOriginalAsync(string tenant, string name, long version, CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, () => ReadOriginalCoreAsync(tenant, name, version, cancellationToken));

    /// <inheritdoc />
    public Task<bool> DeleteAsync(string tenant, string name, long? version, CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, () => DeleteCoreAsync(tenant, name, version, cancellationToken));

    /// <inheritdoc />
    public Task<IAsyncDisposable> SubscribeAsync(Action<AdapterEvent> handler, CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, () => SubscribeCoreAsync(handler, cancellationToken));

    private async Task<AdapterMetadata> PublishCoreAsync(AdapterMetadata draft, byte[] container, byte[]? original, CancellationToken cancellationToken)
    {
        CheckIds(draft.Tenant, draft.Name);
        string tenant = draft.Tenant, name = draft.Name;
        var db = Db;
        long version = await db.StringIncrementAsync(_keys.Sequence(tenant, name)).WaitAsync(cancellationToken);

        var chunkKeys = new List<RedisKey>();
        var payloadHashes = await StageAsync(db, container, i => _keys.Chunk(tenant, name, version, i), chunkKeys, cancellationToken);
        var originalHashes = original is null
            ? []
            : await StageAsync(db, original, i => _keys.OriginalChunk(tenant, name, version, i), chunkKeys, cancellationToken);

        var meta = draft with
        {
            Version = version,
            Checksum = AdapterContainer.ChecksumOf(container),
            StoredBytes = container.Length,
            Created = _time.GetUtcNow(),
            Chunks = payloadHashes.Count,
            ChunkHashes = payloadHashes,
            OriginalChunks = originalHashes.Count,
            OriginalChunkHashes = originalHashes,
            OriginalArchiveBytes = original?.Length ?? 0,
        };

        var keys = new List<RedisKey>
        {
            _keys.Meta(tenant, name, version), _keys.Versions(tenant, name), _keys.Current(tenant, name), _keys.Index(tenant),
        };
        keys.AddRange(chunkKeys);
        var args = new List<RedisValue> { chunkKeys.Count, version, name };
        foreach (var e in meta.ToHash())
        {
            args.Add(e.Name);
            args.Add(e.Value);
        }
        cancellationToken.ThrowIfCancellationRequested();
        long current;
        try
        {
            current = (long)await db.ScriptEvaluateAsync(AdapterScripts.Commit, [.. keys], [.. args]);
        }
        catch (RedisServerException e) when (e.Message.Contains("MISSING_CHUNK", StringComparison.Ordinal))
        {
            throw new StoreUnavailableException($"Publish of {tenant}/{name} v{version} aborted: a staged chunk vanished before commit; nothing was published ({e.Message}).", e);
        }
        Log.Published(_logger, tenant, name, version, container.Length);
        await AnnounceAsync(new AdapterEvent("publish", tenant, name, version, current));
        await CleanupAsync(tenant, name, current, cancellationToken);
        return meta;
    }

    private async Task<List<string>> StageAsync(IDatabase db, byte[] data, Func<int, string> keyOf, List<RedisKey> allKeys, CancellationToken cancellationToken)
    {
        int chunkSize = _options.ChunkBytes;
        int count = Math.Max(1, (data.Length + chunkSize - 1) / chunkSize);
        var hashes = new List<string>(count);
        for (int i = 0; i < count; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var slice = data.AsMemory(i * chunkSize, Math.Min(chunkSize, data.Length - i * chunkSize));
            string key = keyOf(i);
            await db.StringSetAsync(key, slice, _options.StagingTtl);
            hashes.Add(XxHash64.HashToUInt64(slice.Span).ToString("x16"));
            allKeys.Add(key);
            if (AfterChunkWritten is { } hook) await hook(i);
        }
        if (_options.VerifyAfterWrite)
        {
            var values = await db.StringGetAsync([.. allKeys.Skip(allKeys.Count - count)]);
            for (int i = 0; i < count; i++)
            {
                byte[]? stored = values[i];
                if (stored is null || XxHash64.HashToUInt64(stored).ToString("x16") != hashes[i])
                    throw new StoreUnavailableException($"Chunk {i} did not read back as written; the upload was not published.");
            }
        }
        return hashes;
    }

    private async Task<AdapterMetadata?> GetMetadataCoreAsync(string tenant, string name, long? version, CancellationToken cancellationToken)
    {
        CheckIds(tenant, name);
        var db = Db;
        long v = version ?? await CurrentAsync(db, tenant, name);
        if (v <= 0) return null;
        var entries = await db.HashGetAllAsync(_keys.Meta(tenant, name, v)).WaitAsync(cancellationToken);
        return entries.Length == 0 ? null : AdapterMetadata.FromHash(entries);
    }

    private async Task<IReadOnlyList<AdapterMetadata>> ListCoreAsync(string tenant, CancellationToken cancellationToken)
    {
        if (!AdapterKeys.IsValidTenant(tenant)) throw new ArgumentException($"Invalid tenant id '{tenant}'.", nameof(tenant));
        var names = await Db.SetMembersAsync(_keys.Index(tenant)).WaitAsync(cancellationToken);
        var result = new List<AdapterMetadata>();
        foreach (var n in names.Select(x => x.ToString()).Order(StringComparer.Ordinal))
        {
            var meta = await GetMetadataCoreAsync(tenant, n, null, cancellationToken);
            if (meta is not null) result.Add(meta);
        }
        return result;
    }

    private async Task<IReadOnlyList<AdapterMetadata>> ListVersionsCoreAsync(string tenant, string name, CancellationToken cancellationToken)
    {
        CheckIds(tenant, name);
        var versions = await Db.SortedSetRangeByRankAsync(_keys.Versions(tenant, name)).WaitAsync(cancellationToken);
        var result = new List<AdapterMetadata>();
        foreach (var v in versions)
        {
            var meta = await GetMetadataCoreAsync(tenant, name, (long)v, cancellationToken);
            if (meta is not null) result.Add(meta);
        }
        return result;
    }

    private async Task<StoredAdapter?> ReadCoreAsync(string tenant, string name, long? version, CancellationToken cancellationToken)
    {
        var meta = await GetMetadataCoreAsync(tenant, name, version, cancellationToken);
        if (meta is null) return null;
        if (BeforeChunksRead is { } hook) await hook();
        byte[] data;
        try
        {
            data = await ReadChunksAsync(meta, meta.Chunks, meta.ChunkHashes, meta.StoredBytes, i => _keys.Chunk(tenant, name, meta.Version, i), "payload", cancellationToken);
        }
        catch (StoreCorruptException)
        {
            // Deleted (or cleaned up) between reading the metadata and the chunks: absent, not damaged.
            if (!await Db.KeyExistsAsync(_keys.Meta(tenant, name, meta.Version))) return null;
            throw;
        }
        string actual = AdapterContainer.ChecksumOf(data);
        if (actual != meta.Checksum)
            throw new StoreCorruptException($"Adapter {tenant}/{name} v{meta.Version}: container checksum {actual} differs from metadata {meta.Checksum}.");
        try
        {
            AdapterContainer.ReadHeader(data, out _);
        }
        catch (ContainerFormatException e)
        {
            throw new StoreCorruptException($"Adapter {tenant}/{name} v{meta.Version}: {e.Message}");
        }
        return new StoredAdapter(meta, data);
    }

    private async Task<byte[]?> ReadOriginalCoreAsync(string tenant, string name, long version, CancellationToken cancellationToken)
    {
        var meta = await GetMetadataCoreAsync(tenant, name, version, cancellationToken);
        if (meta is null || meta.OriginalChunks == 0) return null;
        return await ReadChunksAsync(meta, meta.OriginalChunks, meta.OriginalChunkHashes, meta.OriginalArchiveBytes,
            i => _keys.OriginalChunk(tenant, name, version, i), "original", cancellationToken);
    }

    private async Task<byte[]> ReadChunksAsync(AdapterMetadata meta, int count, IReadOnlyList<string> hashes, long totalBytes, Func<int, string> keyOf, string what, CancellationToken cancellationToken)
    {
        string id = $"{meta.Tenant}/{meta.Name} v{meta.Version}";
        if (hashes.Count != count) throw new StoreCorruptException($"Adapter {id}: metadata lists {hashes.Count} {what} chunk hashes for {count} chunks.");
        var keys = new RedisKey[count];
        for (int i = 0; i < count; i++) keys[i] = keyOf(i);
        var values = await Db.StringGetAsync(keys).WaitAsync(cancellationToken);
        if (totalBytes < 0 || totalBytes > Array.MaxLength) throw new StoreCorruptException($"Adapter {id}: implausible {what} size {totalBytes}.");
        var data = new byte[totalBytes];
        int offset = 0;
        for (int i = 0; i < count; i++)
        {
            byte[]? chunk = values[i];
            if (chunk is null) throw new StoreCorruptException($"Adapter {id}: {what} chunk {i} of {count} is missing.");
            if (XxHash64.HashToUInt64(chunk).ToString("x16") != hashes[i])
                throw new StoreCorruptException($"Adapter {id}: {what} chunk {i} of {count} is corrupted (hash mismatch).");
            if (offset + chunk.Length > data.Length) throw new StoreCorruptException($"Adapter {id}: {what} chunks exceed the recorded size {totalBytes}.");
            chunk.CopyTo(data, offset);
            offset += chunk.Length;
        }
        if (offset != data.Length) throw new StoreCorruptException($"Adapter {id}: {what} chunks hold {offset} bytes, metadata says {totalBytes}.");
        return data;
    }

    private async Task<bool> DeleteCoreAsync(string tenant, string name, long? version, CancellationToken cancellationToken)
    {
        CheckIds(tenant, name);
        if (version is { } v) return await DeleteVersionAsync(tenant, name, v, cancellationToken);
        bool any = false;
        var versions = await Db.SortedSetRangeByRankAsync(_keys.Versions(tenant, name)).WaitAsync(cancellationToken);
        foreach (var each in versions) any |= await DeleteVersionAsync(tenant, name, (long)each, cancellationToken);
        return any;
    }

    private async Task<bool> DeleteVersionAsync(string tenant, string name, long version, CancellationToken cancellationToken)
    {
        var db = Db;
        var meta = await GetMetadataCoreAsync(tenant, name, version, cancellationToken);
        var keys = new List<RedisKey> { _keys.Meta(tenant, name, version), _keys.Versions(tenant, name), _keys.Current(tenant, name), _keys.Index(tenant) };
        if (meta is not null)
        {
            for (int i = 0; i < meta.Chunks; i++) keys.Add(_keys.Chunk(tenant, name, version, i));
            for (int i = 0; i < meta.OriginalChunks; i++) keys.Add(_keys.OriginalChunk(tenant, name, version, i));
        }
        long current = (long)await db.ScriptEvaluateAsync(AdapterScripts.Delete, [.. keys], [version, name]);
        if (current < 0) return false;
        Log.Deleted(_logger, tenant, name, version);
        await AnnounceAsync(new AdapterEvent("delete", tenant, name, version, current));
        return true;
    }

    private async Task CleanupAsync(string tenant, string name, long current, CancellationToken cancellationToken)
    {
        var versions = await Db.SortedSetRangeByRankAsync(_keys.Versions(tenant, name)).WaitAsync(cancellationToken);
        int excess = versions.Length - _options.KeepVersions;
        for (int i = 0; i < versions.Length && excess > 0; i++)
        {
            long v = (long)versions[i];
            if (v == current) continue;
            await DeleteVersionAsync(tenant, name, v, cancellationToken);
            excess--;
        }
    }

    private async Task<IAsyncDisposable> SubscribeCoreAsync(Action<AdapterEvent> handler, CancellationToken cancellationToken)
    {
        var channel = RedisChannel.Literal(_keys.Channel);
        var subscriber = _redis.GetSubscriber();
        var queue = await subscriber.SubscribeAsync(channel).WaitAsync(cancellationToken);
        queue.OnMessage(message =>
        {
            try
            {
                var e = JsonSerializer.Deserialize<AdapterEvent>((string)message.Message!, AdapterContainer.Json);
                if (e is not null) handler(e);
            }
            catch (Exception ex) when (ex is JsonException or InvalidOperationException or ArgumentException)
            {
                // One bad message or handler failure must not end the subscription.
                Log.EventFailed(_logger, ex);
            }
        });
        return new Subscription(queue);
    }

    private async Task AnnounceAsync(AdapterEvent e)
    {
        string json = JsonSerializer.Serialize(e, AdapterContainer.Json);
        await _redis.GetSubscriber().PublishAsync(RedisChannel.Literal(_keys.Channel), json);
    }

    private async Task<long> CurrentAsync(IDatabase db, string tenant, string name)
    {
        var cur = await db.StringGetAsync(_keys.Current(tenant, name));
        return cur.IsNull ? 0 : (long)cur;
    }

    private static void CheckIds(string tenant, string name)
    {
        if (!AdapterKeys.IsValidTenant(tenant)) throw new ArgumentException($"Invalid tenant id '{tenant}'.", nameof(tenant));
        if (!AdapterKeys.IsValidName(name)) throw new ArgumentException($"Invalid adapter name '{name}'.", nameof(name));
    }

    private sealed class Subscription(ChannelMessageQueue queue) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync() => await RedisFailures.GuardAsync(What, () => queue.UnsubscribeAsync());
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = EventIds.AdapterPublished, Level = LogLevel.Information, Message = "Published adapter {Tenant}/{Name} v{Version} ({Bytes} bytes)")]
        public static partial void Published(ILogger logger, string tenant, string name, long version, int bytes);

        [LoggerMessage(EventId = EventIds.AdapterDeleted, Level = LogLevel.Information, Message = "Deleted adapter {Tenant}/{Name} v{Version}")]
        public static partial void Deleted(ILogger logger, string tenant, string name, long version);

        [LoggerMessage(EventId = EventIds.AdapterEventFailed, Level = LogLevel.Warning, Message = "Adapter event could not be handled")]
        public static partial void EventFailed(ILogger logger, Exception exception);
    }
}
