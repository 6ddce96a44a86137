using System.IO.Hashing;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Serving.AdapterStore.Storage;
using StackExchange.Redis;

namespace Serving.AdapterStore.RewardHeads;

/// <summary>A verified reward head read from the store.</summary>
/// <param name="Metadata">The version's metadata.</param>
/// <param name="Files">Its files as uploaded.</param>
public sealed record StoredRewardHead(RewardHeadMetadata Metadata, RewardHeadFiles Files);

/// <summary>Versioned, tenant-scoped reward head storage over the Redis protocol (the same machinery as adapters).</summary>
public interface IRewardHeadStore
{
    /// <summary>Writes a new version atomically; the store fills in version, checksum, chunks and creation time of <paramref name="draft"/>.</summary>
    Task<RewardHeadMetadata> PublishAsync(RewardHeadMetadata draft, RewardHeadFiles files, CancellationToken cancellationToken);

    /// <summary>Metadata of the current version (or of <paramref name="version"/>), null when absent.</summary>
    Task<RewardHeadMetadata?> GetMetadataAsync(string tenant, string name, long? version, CancellationToken cancellationToken);

    /// <summary>Current metadata of every head of a tenant, by name.</summary>
    Task<IReadOnlyList<RewardHeadMetadata>> ListAsync(string tenant, CancellationToken cancellationToken);

    /// <summary>Metadata of every published version of one head, oldest first.</summary>
    Task<IReadOnlyList<RewardHeadMetadata>> ListVersionsAsync(string tenant, string name, CancellationToken cancellationToken);

    /// <summary>Reads and verifies a version (current when null); null when absent; <see cref="StoreCorruptException"/> when damaged.</summary>
    Task<StoredRewardHead?> ReadAsync(string tenant, string name, long? version, CancellationToken cancellationToken);

    /// <summary>Deletes one version, or every version when <paramref name="version"/> is null; false when nothing existed.</summary>
    Task<bool> DeleteAsync(string tenant, string name, long? version, CancellationToken cancellationToken);

    /// <summary>Receives publish/delete events until the returned handle is disposed.</summary>
    Task<IAsyncDisposable> SubscribeAsync(Action<RewardHeadEvent> handler, CancellationToken cancellationToken);
}

/// <summary>
/// <see cref="IRewardHeadStore"/> over StackExchange.Redis: the adapters' <see cref="RedisArtifactStorage{TMeta}"/> under
/// the keys of <see cref="RewardHeadKeys"/>, the payload a tar of the uploaded files checked by XxHash64.
/// </summary>
public sealed class RedisRewardHeadStore : IRewardHeadStore
{
    private const string What = "The reward head store (Redis)";
    private readonly RedisArtifactStorage<RewardHeadMetadata> _storage;

    /// <summary>Creates a store over an open connection (key prefix, chunking and version count from <paramref name="options"/>).</summary>
    public RedisRewardHeadStore(IConnectionMultiplexer redis, AdapterStoreOptions options, TimeProvider? time = null, ILogger<RedisRewardHeadStore>? logger = null)
    {
        AdapterStoreOptionsValidator.Check(options);
        Keys = new RewardHeadKeys(options.KeyPrefix, options.KeyLayout);
        _storage = new RedisArtifactStorage<RewardHeadMetadata>(redis, options, new ArtifactKind<RewardHeadMetadata>
        {
            Noun = "Reward head",
            Keys = Keys,
            Checksum = ChecksumOf,
            CheckPayload = payload => RewardHeadFiles.FromPayload(payload),
            Complete = (draft, f) => draft with
            {
                Version = f.Version, Checksum = f.Checksum, StoredBytes = f.StoredBytes, Created = f.Created, Chunks = f.Chunks, ChunkHashes = f.ChunkHashes,
            },
            ToHash = meta => meta.ToHash(),
            FromHash = RewardHeadMetadata.FromHash,
            LogPublished = ArtifactLog.RewardHeadPublished,
            LogDeleted = ArtifactLog.RewardHeadDeleted,
        }, time ?? TimeProvider.System, (ILogger?)logger ?? NullLogger.Instance);
    }

    /// <summary>The key layout in use.</summary>
    public RewardHeadKeys Keys { get; }

    /// <summary>The payload checksum recorded in the metadata (XxHash64, hex).</summary>
    public static string ChecksumOf(byte[] payload) => XxHash64.HashToUInt64(payload).ToString("x16");

    /// <inheritdoc />
    public Task<RewardHeadMetadata> PublishAsync(RewardHeadMetadata draft, RewardHeadFiles files, CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, () => _storage.PublishAsync(draft, files.ToPayload(), null, cancellationToken));

    /// <inheritdoc />
    public Task<RewardHeadMetadata?> GetMetadataAsync(string tenant, string name, long? version, CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, () => _storage.GetMetadataAsync(tenant, name, version, cancellationToken));

    /// <inheritdoc />
    public Task<IReadOnlyList<RewardHeadMetadata>> ListAsync(string tenant, CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, () => _storage.ListAsync(tenant, cancellationToken));

    /// <inheritdoc />
    public Task<IReadOnlyList<RewardHeadMetadata>> ListVersionsAsync(string tenant, string name, CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, () => _storage.ListVersionsAsync(tenant, name, cancellationToken));

    /// <inheritdoc />
    public Task<StoredRewardHead?> ReadAsync(string tenant, string name, long? version, CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, async () => await _storage.ReadAsync(tenant, name, version, cancellationToken) is { } r
            ? new StoredRewardHead(r.Metadata, RewardHeadFiles.FromPayload(r.Payload))
            : null);

    /// <inheritdoc />
    public Task<bool> DeleteAsync(string tenant, string name, long? version, CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, () => _storage.DeleteAsync(tenant, name, version, cancellationToken));

    /// <inheritdoc />
    public Task<IAsyncDisposable> SubscribeAsync(Action<RewardHeadEvent> handler, CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, () => _storage.SubscribeAsync(e => handler(new RewardHeadEvent(e.Op, e.Tenant, e.Name, e.Version, e.Current)), What, cancellationToken));
}
