using System.IO.Hashing;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Serving.AdapterStore.Compression;
using StackExchange.Redis;

namespace Serving.AdapterStore.Storage;

/// <summary>What the store keeps of every artifact version, whatever its kind (adapter, reward head).</summary>
public interface IStoredArtifact
{
    /// <summary>Owning tenant.</summary>
    string Tenant { get; }
    /// <summary>Name, unique per tenant and kind.</summary>
    string Name { get; }
    /// <summary>Version number, 1-based, increasing.</summary>
    long Version { get; }
    /// <summary>Checksum of the whole payload (hex).</summary>
    string Checksum { get; }
    /// <summary>Size of the stored payload.</summary>
    long StoredBytes { get; }
    /// <summary>Number of payload chunks.</summary>
    int Chunks { get; }
    /// <summary>XxHash64 (hex) of each payload chunk.</summary>
    IReadOnlyList<string> ChunkHashes { get; }
    /// <summary>Number of chunks of the kept original (0 when not kept).</summary>
    int OriginalChunks { get; }
    /// <summary>Size of the kept original.</summary>
    long OriginalArchiveBytes { get; }
    /// <summary>XxHash64 (hex) of each original chunk.</summary>
    IReadOnlyList<string> OriginalChunkHashes { get; }
}

/// <summary>What the store fills in when it publishes a version.</summary>
internal sealed record StorageFacts(
    long Version, string Checksum, long StoredBytes, DateTimeOffset Created, int Chunks, IReadOnlyList<string> ChunkHashes,
    int OriginalChunks, IReadOnlyList<string> OriginalChunkHashes, long OriginalArchiveBytes);

/// <summary>One kind of stored artifact: its keys, how its metadata maps to the Redis hash, how its payload is checked.</summary>
internal sealed class ArtifactKind<TMeta> where TMeta : class, IStoredArtifact
{
    /// <summary>Capitalised noun for messages ("Adapter", "Reward head").</summary>
    public required string Noun { get; init; }
    public required ArtifactKeys Keys { get; init; }
    /// <summary>The checksum recorded in the metadata and verified on every read.</summary>
    public required Func<byte[], string> Checksum { get; init; }
    /// <summary>Structural check of a verified payload; throws <see cref="InvalidDataException"/> with the reason.</summary>
    public required Action<byte[]> CheckPayload { get; init; }
    /// <summary>The draft with the store's facts filled in.</summary>
    public required Func<TMeta, StorageFacts, TMeta> Complete { get; init; }
    public required Func<TMeta, HashEntry[]> ToHash { get; init; }
    /// <summary>Parses the hash; throws <see cref="StoreCorruptException"/> for a damaged one.</summary>
    public required Func<HashEntry[], TMeta> FromHash { get; init; }
    public required Action<ILogger, string, string, long, int> LogPublished { get; init; }
    public required Action<ILogger, string, string, long> LogDeleted { get; init; }
}

/// <summary>
/// The versioned, chunked, checksummed storage every artifact kind shares (<see cref="RedisAdapterStore"/>,
/// <see cref="RedisRewardHeadStore"/>): chunks staged with a TTL and read back, an atomic Lua commit that moves the
/// current-version pointer forward only, verified reads, deletes that move the pointer back, cleanup of old versions,
/// and publish/delete events on the kind's channel. Callers wrap each call in <see cref="RedisFailures.GuardAsync{T}"/>.
/// </summary>
internal sealed class RedisArtifactStorage<TMeta>(IConnectionMultiplexer redis, AdapterStoreOptions options, ArtifactKind<TMeta> kind, TimeProvider time, ILogger logger)
    where TMeta : class, IStoredArtifact
{
    private readonly ArtifactKeys _keys = kind.Keys;

    /// <summary>Test hook: runs after each staged chunk is written (used to kill the server mid-upload).</summary>
    public Func<int, Task>? AfterChunkWritten { get; set; }

    /// <summary>Test hook: runs between the metadata read and the chunk read.</summary>
    public Func<Task>? BeforeChunksRead { get; set; }

    private IDatabase Db => redis.GetDatabase();

    public async Task<TMeta> PublishAsync(TMeta draft, byte[] payload, byte[]? original, CancellationToken cancellationToken)
    {
        CheckIds(draft.Tenant, draft.Name);
        string tenant = draft.Tenant, name = draft.Name;
        var db = Db;
        long version = await db.StringIncrementAsync(_keys.Sequence(tenant, name)).WaitAsync(cancellationToken);

        var chunkKeys = new List<RedisKey>();
        var payloadHashes = await StageAsync(db, payload, i => _keys.Chunk(tenant, name, version, i), chunkKeys, cancellationToken);
        var originalHashes = original is null
            ? []
            : await StageAsync(db, original, i => _keys.OriginalChunk(tenant, name, version, i), chunkKeys, cancellationToken);

        var meta = kind.Complete(draft, new StorageFacts(version, kind.Checksum(payload), payload.Length, time.GetUtcNow(), payloadHashes.Count, payloadHashes,
            originalHashes.Count, originalHashes, original?.Length ?? 0));

        var metaKey = _keys.Meta(tenant, name, version);
        var keys = new List<RedisKey> { metaKey, _keys.Versions(tenant, name), _keys.Current(tenant, name) };
        keys.AddRange(chunkKeys);
        var args = new List<RedisValue> { chunkKeys.Count, version };
        foreach (var e in kind.ToHash(meta))
        {
            args.Add(e.Name);
            args.Add(e.Value);
        }
        cancellationToken.ThrowIfCancellationRequested();
        // The index lives in the tenant's slot, outside the commit: listed before it (a listed name without a current
        // version is skipped by lists; a committed name missing from the index would be invisible to them) and again
        // after it (a concurrent delete of the last version may have removed the name in between).
        await db.SetAddAsync(_keys.Index(tenant), name);
        long current;
        try
        {
            current = (long)await db.ScriptEvaluateAsync(AdapterScripts.Commit, [.. keys], [.. args]);
        }
        catch (RedisServerException e) when (e.Message.Contains("MISSING_CHUNK", StringComparison.Ordinal))
        {
            throw new StoreUnavailableException($"Publish of {tenant}/{name} v{version} aborted: a staged chunk vanished before commit; nothing was published ({e.Message}).", e);
        }
        await WaitForReplicasAsync(metaKey, tenant, name, version);
        await db.SetAddAsync(_keys.Index(tenant), name);
        kind.LogPublished(logger, tenant, name, version, payload.Length);
        await AnnounceAsync(new AdapterEvent("publish", tenant, name, version, current));
        await CleanupAsync(tenant, name, current, cancellationToken);
        return meta;
    }

    private async Task<List<string>> StageAsync(IDatabase db, byte[] data, Func<int, string> keyOf, List<RedisKey> allKeys, CancellationToken cancellationToken)
    {
        int chunkSize = options.ChunkBytes;
        int count = Math.Max(1, (data.Length + chunkSize - 1) / chunkSize);
        var hashes = new List<string>(count);
        for (int i = 0; i < count; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var slice = data.AsMemory(i * chunkSize, Math.Min(chunkSize, data.Length - i * chunkSize));
            string key = keyOf(i);
            await db.StringSetAsync(key, slice, options.StagingTtl);
            hashes.Add(XxHash64.HashToUInt64(slice.Span).ToString("x16"));
            allKeys.Add(key);
            if (AfterChunkWritten is { } hook) await hook(i);
        }
        if (options.VerifyAfterWrite)
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

    public async Task<TMeta?> GetMetadataAsync(string tenant, string name, long? version, CancellationToken cancellationToken)
    {
        CheckIds(tenant, name);
        var db = Db;
        long v = version ?? await CurrentAsync(db, tenant, name);
        if (v <= 0) return null;
        var entries = await db.HashGetAllAsync(_keys.Meta(tenant, name, v)).WaitAsync(cancellationToken);
        return entries.Length == 0 ? null : kind.FromHash(entries);
    }

    public async Task<IReadOnlyList<TMeta>> ListAsync(string tenant, CancellationToken cancellationToken)
    {
        if (!AdapterKeys.IsValidTenant(tenant)) throw new ArgumentException($"Invalid tenant id '{tenant}'.", nameof(tenant));
        var names = await Db.SetMembersAsync(_keys.Index(tenant)).WaitAsync(cancellationToken);
        var result = new List<TMeta>();
        foreach (var n in names.Select(x => x.ToString()).Order(StringComparer.Ordinal))
        {
            var meta = await GetMetadataAsync(tenant, n, null, cancellationToken);
            if (meta is not null) result.Add(meta);
        }
        return result;
    }

    public async Task<IReadOnlyList<TMeta>> ListVersionsAsync(string tenant, string name, CancellationToken cancellationToken)
    {
        CheckIds(tenant, name);
        var versions = await Db.SortedSetRangeByRankAsync(_keys.Versions(tenant, name)).WaitAsync(cancellationToken);
        var result = new List<TMeta>();
        foreach (var v in versions)
        {
            var meta = await GetMetadataAsync(tenant, name, (long)v, cancellationToken);
            if (meta is not null) result.Add(meta);
        }
        return result;
    }

    /// <summary>The verified payload of a version with its metadata; null when absent.</summary>
    public async Task<(TMeta Metadata, byte[] Payload)?> ReadAsync(string tenant, string name, long? version, CancellationToken cancellationToken)
    {
        var meta = await GetMetadataAsync(tenant, name, version, cancellationToken);
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
        string actual;
        try
        {
            actual = kind.Checksum(data);
        }
        catch (ContainerFormatException e)
        {
            throw new StoreCorruptException($"{kind.Noun} {tenant}/{name} v{meta.Version}: {e.Message}");
        }
        if (actual != meta.Checksum)
            throw new StoreCorruptException($"{kind.Noun} {tenant}/{name} v{meta.Version}: checksum {actual} differs from metadata {meta.Checksum}.");
        try
        {
            kind.CheckPayload(data);
        }
        catch (Exception e) when (e is InvalidDataException or ContainerFormatException)
        {
            throw new StoreCorruptException($"{kind.Noun} {tenant}/{name} v{meta.Version}: {e.Message}");
        }
        return (meta, data);
    }

    public async Task<byte[]?> ReadOriginalAsync(string tenant, string name, long version, CancellationToken cancellationToken)
    {
        var meta = await GetMetadataAsync(tenant, name, version, cancellationToken);
        if (meta is null || meta.OriginalChunks == 0) return null;
        return await ReadChunksAsync(meta, meta.OriginalChunks, meta.OriginalChunkHashes, meta.OriginalArchiveBytes,
            i => _keys.OriginalChunk(tenant, name, version, i), "original", cancellationToken);
    }

    private async Task<byte[]> ReadChunksAsync(TMeta meta, int count, IReadOnlyList<string> hashes, long totalBytes, Func<int, string> keyOf, string what, CancellationToken cancellationToken)
    {
        string id = $"{kind.Noun} {meta.Tenant}/{meta.Name} v{meta.Version}";
        if (hashes.Count != count) throw new StoreCorruptException($"{id}: metadata lists {hashes.Count} {what} chunk hashes for {count} chunks.");
        var keys = new RedisKey[count];
        for (int i = 0; i < count; i++) keys[i] = keyOf(i);
        var values = await Db.StringGetAsync(keys).WaitAsync(cancellationToken);
        if (totalBytes < 0 || totalBytes > Array.MaxLength) throw new StoreCorruptException($"{id}: implausible {what} size {totalBytes}.");
        var data = new byte[totalBytes];
        int offset = 0;
        for (int i = 0; i < count; i++)
        {
            byte[]? chunk = values[i];
            if (chunk is null) throw new StoreCorruptException($"{id}: {what} chunk {i} of {count} is missing.");
            if (XxHash64.HashToUInt64(chunk).ToString("x16") != hashes[i])
                throw new StoreCorruptException($"{id}: {what} chunk {i} of {count} is corrupted (hash mismatch).");
            if (offset + chunk.Length > data.Length) throw new StoreCorruptException($"{id}: {what} chunks exceed the recorded size {totalBytes}.");
            chunk.CopyTo(data, offset);
            offset += chunk.Length;
        }
        if (offset != data.Length) throw new StoreCorruptException($"{id}: {what} chunks hold {offset} bytes, metadata says {totalBytes}.");
        return data;
    }

    public async Task<bool> DeleteAsync(string tenant, string name, long? version, CancellationToken cancellationToken)
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
        var meta = await GetMetadataAsync(tenant, name, version, cancellationToken);
        var keys = new List<RedisKey> { _keys.Meta(tenant, name, version), _keys.Versions(tenant, name), _keys.Current(tenant, name) };
        if (meta is not null)
        {
            for (int i = 0; i < meta.Chunks; i++) keys.Add(_keys.Chunk(tenant, name, version, i));
            for (int i = 0; i < meta.OriginalChunks; i++) keys.Add(_keys.OriginalChunk(tenant, name, version, i));
        }
        long current = (long)await db.ScriptEvaluateAsync(AdapterScripts.Delete, [.. keys], [version]);
        if (current < 0) return false;
        if (current == 0)
        {
            // The last version is gone: unlist the name, then list it again if a concurrent publish committed meanwhile
            // (its own second add may have run before this removal).
            await db.SetRemoveAsync(_keys.Index(tenant), name);
            if (await CurrentAsync(db, tenant, name) > 0) await db.SetAddAsync(_keys.Index(tenant), name);
        }
        kind.LogDeleted(logger, tenant, name, version);
        await AnnounceAsync(new AdapterEvent("delete", tenant, name, version, current));
        return true;
    }

    /// <summary>
    /// With <see cref="AdapterStoreOptions.WaitReplicas"/>: Redis <c>WAIT</c> on the primary that holds the artifact's
    /// slot, over the connection the commit went through, so the commit (and the chunks before it, replicated in order)
    /// is on that many replicas before the publish is acknowledged.
    /// </summary>
    private async Task WaitForReplicasAsync(RedisKey key, string tenant, string name, long version)
    {
        int wanted = options.WaitReplicas;
        if (wanted == 0) return;
        var primary = redis.GetServer(key);
        long timeoutMs = (long)options.WaitReplicasTimeout.TotalMilliseconds;
        long confirmed = (long)await primary.ExecuteAsync("WAIT", wanted, timeoutMs);
        if (confirmed < wanted)
        {
            throw new StoreUnavailableException($"{kind.Noun} {tenant}/{name} v{version} was committed on the primary but only {confirmed} of {wanted} replicas " +
                $"confirmed it within {timeoutMs} ms; it may be visible and could be lost if the primary fails. Retry the upload (it makes a new version).");
        }
    }

    private async Task CleanupAsync(string tenant, string name, long current, CancellationToken cancellationToken)
    {
        var versions = await Db.SortedSetRangeByRankAsync(_keys.Versions(tenant, name)).WaitAsync(cancellationToken);
        int excess = versions.Length - options.KeepVersions;
        for (int i = 0; i < versions.Length && excess > 0; i++)
        {
            long v = (long)versions[i];
            if (v == current) continue;
            await DeleteVersionAsync(tenant, name, v, cancellationToken);
            excess--;
        }
    }

    /// <summary>Receives the kind's publish/delete events until the handle is disposed (<paramref name="what"/> names the store in failures).</summary>
    public async Task<IAsyncDisposable> SubscribeAsync(Action<AdapterEvent> handler, string what, CancellationToken cancellationToken)
    {
        var channel = RedisChannel.Literal(_keys.Channel);
        var subscriber = redis.GetSubscriber();
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
                ArtifactLog.EventFailed(logger, kind.Noun, ex);
            }
        });
        return new Subscription(queue, what);
    }

    private async Task AnnounceAsync(AdapterEvent e)
    {
        string json = JsonSerializer.Serialize(e, AdapterContainer.Json);
        await redis.GetSubscriber().PublishAsync(RedisChannel.Literal(_keys.Channel), json);
    }

    private async Task<long> CurrentAsync(IDatabase db, string tenant, string name)
    {
        var cur = await db.StringGetAsync(_keys.Current(tenant, name));
        return cur.IsNull ? 0 : (long)cur;
    }

    private void CheckIds(string tenant, string name)
    {
        if (!AdapterKeys.IsValidTenant(tenant)) throw new ArgumentException($"Invalid tenant id '{tenant}'.", nameof(tenant));
        if (!AdapterKeys.IsValidName(name)) throw new ArgumentException($"Invalid {kind.Noun.ToLowerInvariant()} name '{name}'.", nameof(name));
    }

    private sealed class Subscription(ChannelMessageQueue queue, string what) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync() => await RedisFailures.GuardAsync(what, () => queue.UnsubscribeAsync());
    }
}

/// <summary>Logs of the artifact storage, one event id per kind and action.</summary>
internal static partial class ArtifactLog
{
    [LoggerMessage(EventId = EventIds.AdapterPublished, Level = LogLevel.Information, Message = "Published adapter {Tenant}/{Name} v{Version} ({Bytes} bytes)")]
    public static partial void AdapterPublished(ILogger logger, string tenant, string name, long version, int bytes);

    [LoggerMessage(EventId = EventIds.AdapterDeleted, Level = LogLevel.Information, Message = "Deleted adapter {Tenant}/{Name} v{Version}")]
    public static partial void AdapterDeleted(ILogger logger, string tenant, string name, long version);

    [LoggerMessage(EventId = EventIds.AdapterEventFailed, Level = LogLevel.Warning, Message = "{Kind} event could not be handled")]
    public static partial void EventFailed(ILogger logger, string kind, Exception exception);

    [LoggerMessage(EventId = EventIds.RewardHeadPublished, Level = LogLevel.Information, Message = "Published reward head {Tenant}/{Name} v{Version} ({Bytes} bytes)")]
    public static partial void RewardHeadPublished(ILogger logger, string tenant, string name, long version, int bytes);

    [LoggerMessage(EventId = EventIds.RewardHeadDeleted, Level = LogLevel.Information, Message = "Deleted reward head {Tenant}/{Name} v{Version}")]
    public static partial void RewardHeadDeleted(ILogger logger, string tenant, string name, long version);
}
