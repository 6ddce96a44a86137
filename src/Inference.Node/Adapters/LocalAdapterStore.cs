using System.Collections.Concurrent;
using Serving.AdapterStore.Compression;
using Serving.AdapterStore.Storage;

namespace Serving.Inference.Node.Adapters;

/// <summary>
/// An in-process <see cref="IAdapterStore"/> for a node without Redis (<c>Node:AdapterDirectory</c>): the same metadata,
/// containers, versions and publish/delete events as the Redis store, kept in memory. Filled through the store's
/// <see cref="Serving.AdapterStore.Ingest.AdapterIngestor"/>, so adapters pass the same validation.
/// </summary>
public sealed class LocalAdapterStore(TimeProvider? time = null) : IAdapterStore
{
    private readonly Lock _gate = new();
    private readonly Dictionary<(string Tenant, string Name), SortedDictionary<long, StoredAdapter>> _versions = [];
    private readonly Dictionary<(string Tenant, string Name), long> _current = [];
    private readonly ConcurrentDictionary<Action<AdapterEvent>, byte> _handlers = new();
    private readonly TimeProvider _time = time ?? TimeProvider.System;

    public Task<AdapterMetadata> PublishAsync(AdapterMetadata draft, byte[] container, byte[]? original, CancellationToken cancellationToken)
    {
        AdapterMetadata meta;
        lock (_gate)
        {
            var id = (draft.Tenant, draft.Name);
            if (!_versions.TryGetValue(id, out var versions)) _versions[id] = versions = [];
            var version = (versions.Count == 0 ? 0 : versions.Keys.Max()) + 1;
            meta = draft with
            {
                Version = version,
                Checksum = AdapterContainer.ChecksumOf(container),
                Created = _time.GetUtcNow(),
                StoredBytes = container.Length,
                Chunks = 1,
            };
            versions[version] = new StoredAdapter(meta, container);
            _current[id] = version;
        }
        Announce(new AdapterEvent("publish", meta.Tenant, meta.Name, meta.Version, meta.Version));
        return Task.FromResult(meta);
    }

    public Task<AdapterMetadata?> GetMetadataAsync(string tenant, string name, long? version, CancellationToken cancellationToken) =>
        Task.FromResult(Find(tenant, name, version)?.Metadata);

    public Task<IReadOnlyList<AdapterMetadata>> ListAsync(string tenant, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            IReadOnlyList<AdapterMetadata> list = [.. _current.Where(c => c.Key.Tenant == tenant)
                .Select(c => _versions[c.Key][c.Value].Metadata).OrderBy(m => m.Name, StringComparer.Ordinal)];
            return Task.FromResult(list);
        }
    }

    public Task<IReadOnlyList<AdapterMetadata>> ListVersionsAsync(string tenant, string name, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            IReadOnlyList<AdapterMetadata> list = _versions.TryGetValue((tenant, name), out var v) ? [.. v.Values.Select(s => s.Metadata)] : [];
            return Task.FromResult(list);
        }
    }

    public Task<StoredAdapter?> ReadAsync(string tenant, string name, long? version, CancellationToken cancellationToken) =>
        Task.FromResult(Find(tenant, name, version));

    public Task<byte[]?> ReadOriginalAsync(string tenant, string name, long version, CancellationToken cancellationToken) =>
        Task.FromResult<byte[]?>(null);

    public Task<bool> DeleteAsync(string tenant, string name, long? version, CancellationToken cancellationToken)
    {
        long deleted, current;
        lock (_gate)
        {
            var id = (tenant, name);
            if (!_versions.TryGetValue(id, out var versions)) return Task.FromResult(false);
            if (version is long v)
            {
                if (!versions.Remove(v)) return Task.FromResult(false);
                deleted = v;
            }
            else
            {
                deleted = versions.Keys.Max();
                versions.Clear();
            }
            current = versions.Count == 0 ? 0 : versions.Keys.Max();
            if (current == 0)
            {
                _versions.Remove(id);
                _current.Remove(id);
            }
            else
            {
                _current[id] = current;
            }
        }
        Announce(new AdapterEvent("delete", tenant, name, deleted, current));
        return Task.FromResult(true);
    }

    public Task<IAsyncDisposable> SubscribeAsync(Action<AdapterEvent> handler, CancellationToken cancellationToken)
    {
        _handlers[handler] = 0;
        return Task.FromResult<IAsyncDisposable>(new Subscription(this, handler));
    }

    private StoredAdapter? Find(string tenant, string name, long? version)
    {
        lock (_gate)
        {
            if (!_versions.TryGetValue((tenant, name), out var versions)) return null;
            var v = version ?? _current[(tenant, name)];
            return versions.TryGetValue(v, out var s) ? s : null;
        }
    }

    private void Announce(AdapterEvent e)
    {
        foreach (var h in _handlers.Keys) h(e);
    }

    private sealed class Subscription(LocalAdapterStore store, Action<AdapterEvent> handler) : IAsyncDisposable
    {
        public ValueTask DisposeAsync()
        {
            store._handlers.TryRemove(handler, out _);
            return ValueTask.CompletedTask;
        }
    }
}
