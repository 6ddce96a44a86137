using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Serving.AdapterStore.Compression;
using StackExchange.Redis;

namespace Serving.AdapterStore.Storage;

/// <summary>
/// <see cref="IAdapterStore"/> over StackExchange.Redis; the same code talks to redis-server and to embedded Garnet.
/// The versioning, chunking, checksums and events are the shared <see cref="RedisArtifactStorage{TMeta}"/>'s; this type
/// adds the adapter's metadata hash and container check.
/// </summary>
public sealed class RedisAdapterStore : IAdapterStore
{
    private readonly RedisArtifactStorage<AdapterMetadata> _storage;

    /// <summary>Creates a store over an open connection.</summary>
    public RedisAdapterStore(IConnectionMultiplexer redis, AdapterStoreOptions options, TimeProvider? time = null, ILogger<RedisAdapterStore>? logger = null)
    {
        AdapterStoreOptionsValidator.Check(options);
        Keys = new AdapterKeys(options.KeyPrefix, options.KeyLayout);
        _storage = new RedisArtifactStorage<AdapterMetadata>(redis, options, Kind(Keys), time ?? TimeProvider.System, (ILogger?)logger ?? NullLogger.Instance);
    }

    /// <summary>The key layout in use.</summary>
    public AdapterKeys Keys { get; }

    /// <summary>Test hook: runs after each staged chunk is written (used to kill the server mid-upload).</summary>
    internal Func<int, Task>? AfterChunkWritten { get => _storage.AfterChunkWritten; set => _storage.AfterChunkWritten = value; }

    /// <summary>Test hook: runs between the metadata read and the chunk read.</summary>
    internal Func<Task>? BeforeChunksRead { get => _storage.BeforeChunksRead; set => _storage.BeforeChunksRead = value; }

    private const string What = "The adapter store (Redis)";

    private static ArtifactKind<AdapterMetadata> Kind(AdapterKeys keys) => new()
    {
        Noun = "Adapter",
        Keys = keys,
        Checksum = container => AdapterContainer.ChecksumOf(container),
        CheckPayload = container => AdapterContainer.ReadHeader(container, out _),
        Complete = (draft, f) => draft with
        {
            Version = f.Version,
            Checksum = f.Checksum,
            StoredBytes = f.StoredBytes,
            Created = f.Created,
            Chunks = f.Chunks,
            ChunkHashes = f.ChunkHashes,
            OriginalChunks = f.OriginalChunks,
            OriginalChunkHashes = f.OriginalChunkHashes,
            OriginalArchiveBytes = f.OriginalArchiveBytes,
        },
        ToHash = meta => meta.ToHash(),
        FromHash = AdapterMetadata.FromHash,
        LogPublished = ArtifactLog.AdapterPublished,
        LogDeleted = ArtifactLog.AdapterDeleted,
    };

    /// <inheritdoc />
    public Task<AdapterMetadata> PublishAsync(AdapterMetadata draft, byte[] container, byte[]? original, CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, () => _storage.PublishAsync(draft, container, original, cancellationToken));

    /// <inheritdoc />
    public Task<AdapterMetadata?> GetMetadataAsync(string tenant, string name, long? version, CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, () => _storage.GetMetadataAsync(tenant, name, version, cancellationToken));

    /// <inheritdoc />
    public Task<IReadOnlyList<AdapterMetadata>> ListAsync(string tenant, CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, () => _storage.ListAsync(tenant, cancellationToken));

    /// <inheritdoc />
    public Task<IReadOnlyList<AdapterMetadata>> ListVersionsAsync(string tenant, string name, CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, () => _storage.ListVersionsAsync(tenant, name, cancellationToken));

    /// <inheritdoc />
    public Task<StoredAdapter?> ReadAsync(string tenant, string name, long? version, CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, async () => await _storage.ReadAsync(tenant, name, version, cancellationToken) is { } r ? new StoredAdapter(r.Metadata, r.Payload) : null);

    /// <inheritdoc />
    public Task<byte[]?> ReadOriginalAsync(string tenant, string name, long version, CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, () => _storage.ReadOriginalAsync(tenant, name, version, cancellationToken));

    /// <inheritdoc />
    public Task<bool> DeleteAsync(string tenant, string name, long? version, CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, () => _storage.DeleteAsync(tenant, name, version, cancellationToken));

    /// <inheritdoc />
    public Task<IAsyncDisposable> SubscribeAsync(Action<AdapterEvent> handler, CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, () => _storage.SubscribeAsync(handler, What, cancellationToken));
}
