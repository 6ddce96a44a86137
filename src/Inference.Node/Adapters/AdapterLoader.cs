using System.Globalization;
using Serving.AdapterStore.Storage;
using Serving.Checkpoints;
using Serving.Contracts.Errors;
using Serving.Inference.Adapters;
using Serving.Inference.Node.Telemetry;
using Serving.Inference.Scheduling;

namespace Serving.Inference.Node.Adapters;

/// <summary>
/// Store → host: which version of each <c>tenant/name</c> is current (a mapping re-checked after
/// <see cref="AdapterManager.MappingTtl"/> or dropped by a store event), and the loads themselves, each adapter read
/// once however many requests ask for it at the same time (single flight). A load that a store event overtook does not
/// install its result (epochs). While the store is unreachable the version cached before is served.
/// Lock order: this type's lock, then the cache's.
/// </summary>
internal sealed class AdapterLoader(
    IAdapterStore store, HostAdapterCache cache, ModelConfig baseConfig, string baseModel, NodeMetrics metrics, TimeProvider time, ILogger logger,
    CancellationToken stopping)
{
    private readonly Lock _gate = new();
    private readonly Dictionary<string, Mapping> _current = new(StringComparer.Ordinal);
    private readonly Dictionary<string, long> _epoch = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Task<HostAdapter?>> _loading = new(StringComparer.Ordinal);

    private sealed record Mapping(string Key, long CheckedAt);

    /// <summary>True when <paramref name="id"/> has a current-version mapping (the adapter exists as far as the node knows).</summary>
    public bool IsMapped(string id)
    {
        lock (_gate) return _current.ContainsKey(id);
    }

    /// <summary>Ids whose store reads are in flight, sorted.</summary>
    public List<string> Loading()
    {
        lock (_gate) return [.. _loading.Keys.Order(StringComparer.Ordinal)];
    }

    /// <summary>The current version of <c>tenant/name</c> in the host cache, loading it once when absent; null when the store has none.</summary>
    public async Task<HostAdapter?> GetAsync(string tenant, string name, CancellationToken cancellationToken)
    {
        var id = tenant + "/" + name;
        Task<HostAdapter?> load;
        lock (_gate)
        {
            Mapping? fallback = null;
            if (_current.TryGetValue(id, out var m) && cache.Peek(m.Key) is not null)
            {
                if (time.GetElapsedTime(m.CheckedAt) < AdapterManager.MappingTtl && cache.Get(m.Key) is { } cached)
                {
                    metrics.AdapterLookup("host", hit: true);
                    return cached;
                }
                fallback = m;
            }
            metrics.AdapterLookup("host", hit: false);
            if (!_loading.TryGetValue(id, out load!))
            {
                var epoch = _epoch.GetValueOrDefault(id);
                var tcs = new TaskCompletionSource<HostAdapter?>(TaskCreationOptions.RunContinuationsAsynchronously);
                _loading[id] = load = tcs.Task;
                _ = Task.Run(() => LoadAsync(tenant, name, id, epoch, fallback, tcs));
            }
        }
        return await load.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// A store event for <paramref name="id"/>: its mapping and any load in flight are forgotten (requests already
    /// waiting keep their load; new ones start a fresh one), and cached versions other than <paramref name="current"/>
    /// are dropped with every merge that uses it.
    /// </summary>
    public void Invalidate(string id, long current)
    {
        lock (_gate)
        {
            _epoch[id] = _epoch.GetValueOrDefault(id) + 1;
            _current.Remove(id);
            _loading.Remove(id);
            cache.RemoveWhere(h => (h.Id == id && h.Version != current) || h.PartIds.Contains(id));
        }
    }

    /// <summary>Events may have been missed (the subscription was down): every mapping is re-checked on its next use.</summary>
    public void ForgetMappings()
    {
        lock (_gate) _current.Clear();
    }

    /// <summary>Caches a merge only when every part is still the current version (a stale merge would outlive its parts' events).</summary>
    public void AddMergeIfCurrent(HostAdapter merge, IReadOnlyList<AdapterRef> parts)
    {
        lock (_gate)
        {
            if (merge.PartIds.All(p => _current.TryGetValue(p, out var m) && parts.Any(x => x.Key == m.Key))) cache.Add(merge);
        }
    }

    private async Task LoadAsync(string tenant, string name, string id, long epoch, Mapping? fallback, TaskCompletionSource<HostAdapter?> tcs)
    {
        var started = time.GetTimestamp();
        try
        {
            var meta = await store.GetMetadataAsync(tenant, name, null, stopping).ConfigureAwait(false);
            if (meta is null)
            {
                Finish(null);
                return;
            }
            if (meta.BaseModel != baseModel)
            {
                throw new RequestRefusedException(ErrorCodes.ModelNotFound,
                    $"The adapter '{id}' was made for base model '{meta.BaseModel}'; this node serves '{baseModel}'.", "model");
            }
            var key = $"{id}@{meta.Version.ToString(CultureInfo.InvariantCulture)}";
            if (cache.Peek(key) is { } cached)
            {
                Finish(cached);
                return;
            }
            var loaded = await store.LoadAdapterAsync(tenant, name, meta.Version, stopping).ConfigureAwait(false);
            if (loaded is null)
            {
                Finish(null); // deleted between the two reads
                return;
            }
            AdapterFactors factors;
            try
            {
                factors = AdapterFactors.FromLora(baseConfig,
                    loaded.Value.Adapter.Modules.Select(m => new LoraModule(m.Module, m.Layer, m.Rank, m.Scale, m.A, m.B)), consume: true);
            }
            catch (ArgumentException e)
            {
                throw new RequestRefusedException(ErrorCodes.AdapterIncompatible,
                    $"The adapter '{id}' does not fit base model '{baseModel}': {e.Message}", "model");
            }
            var elapsed = time.GetElapsedTime(started);
            metrics.AdapterLoaded(elapsed);
            NodeLog.AdapterLoaded(logger, key, elapsed.TotalMilliseconds, factors.Bytes);
            Finish(new HostAdapter(key, id, meta.Version, new AdapterRef(key, factors), []));
        }
        catch (Exception e) when (AdapterManager.IsStoreFailure(e) || e is StoreCorruptException)
        {
            NodeLog.AdapterStoreUnavailable(logger, e.Message);
            // Serve the version we had while the store is down.
            HostAdapter? stale = null;
            lock (_gate)
            {
                if (fallback is not null && _epoch.GetValueOrDefault(id) == epoch) stale = cache.Peek(fallback.Key);
            }
            if (stale is not null)
            {
                Finish(stale);
            }
            else
            {
                Fail(e is StoreCorruptException
                    ? new RequestRefusedException(ErrorCodes.AdapterUnavailable, $"The adapter '{id}' cannot be read from the store: {e.Message}", "model")
                    : OpenAI.Refusals.StoreUnavailable(e.Message));
            }
        }
        catch (RequestRefusedException e)
        {
            Fail(e);
        }
        catch (OperationCanceledException e)
        {
            Fail(e);
        }

        void Finish(HostAdapter? entry)
        {
            lock (_gate)
            {
                if (_loading.TryGetValue(id, out var t) && t == tcs.Task) _loading.Remove(id);
                if (entry is not null && _epoch.GetValueOrDefault(id) == epoch)
                {
                    _current[id] = new Mapping(entry.Key, time.GetTimestamp());
                    cache.Add(entry);
                }
            }
            tcs.SetResult(entry);
        }

        void Fail(Exception e)
        {
            lock (_gate)
            {
                if (_loading.TryGetValue(id, out var t) && t == tcs.Task) _loading.Remove(id);
            }
            tcs.SetException(e);
        }
    }
}
