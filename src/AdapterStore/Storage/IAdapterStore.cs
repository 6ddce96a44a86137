namespace Serving.AdapterStore.Storage;

/// <summary>A verified payload read from the store.</summary>
/// <param name="Metadata">The version's metadata.</param>
/// <param name="Container">Container bytes whose chunk hashes and overall checksum were verified.</param>
public sealed record StoredAdapter(AdapterMetadata Metadata, byte[] Container);

/// <summary>Versioned, tenant-scoped adapter storage over the Redis protocol.</summary>
public interface IAdapterStore
{
    /// <summary>
    /// Writes a new version (chunks staged with a TTL, verified, then committed atomically with the pointer move).
    /// The store fills in version, checksum, chunk data and creation time of <paramref name="draft"/>.
    /// </summary>
    Task<AdapterMetadata> PublishAsync(AdapterMetadata draft, byte[] container, byte[]? original, CancellationToken cancellationToken);

    /// <summary>Metadata of the current version (or of <paramref name="version"/>), null when absent.</summary>
    Task<AdapterMetadata?> GetMetadataAsync(string tenant, string name, long? version, CancellationToken cancellationToken);

    /// <summary>Current metadata of every adapter of a tenant, by name.</summary>
    Task<IReadOnlyList<AdapterMetadata>> ListAsync(string tenant, CancellationToken cancellationToken);

    /// <summary>Metadata of every published version of one adapter, oldest first.</summary>
    Task<IReadOnlyList<AdapterMetadata>> ListVersionsAsync(string tenant, string name, CancellationToken cancellationToken);

    /// <summary>Reads and verifies a payload; null when absent; <see cref="StoreCorruptException"/> when damaged.</summary>
    Task<StoredAdapter?> ReadAsync(string tenant, string name, long? version, CancellationToken cancellationToken);

    /// <summary>The kept original upload (a tar of the PEFT folder), null when absent or not kept.</summary>
    Task<byte[]?> ReadOriginalAsync(string tenant, string name, long version, CancellationToken cancellationToken);

    /// <summary>Deletes one version, or every version when <paramref name="version"/> is null; false when nothing existed.</summary>
    Task<bool> DeleteAsync(string tenant, string name, long? version, CancellationToken cancellationToken);

    /// <summary>Receives publish/delete events until the returned handle is disposed.</summary>
    Task<IAsyncDisposable> SubscribeAsync(Action<AdapterEvent> handler, CancellationToken cancellationToken);
}
