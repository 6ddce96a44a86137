using System.Globalization;
using Microsoft.Extensions.Options;
using Serving.AdapterStore.Storage;
using Serving.Contracts.Errors;
using Serving.Contracts.Models;
using Serving.Contracts.Registry;
using Serving.Inference.Adapters;
using Serving.Inference.Node.Hosting;
using Serving.Inference.Node.OpenAI;
using Serving.Inference.Node.Registry;
using Serving.Inference.Node.Telemetry;
using Serving.Inference.Scheduling;

namespace Serving.Inference.Node.Adapters;

/// <summary>One decoded adapter (or merge) in the host cache.</summary>
/// <param name="Key">Immutable content key: <c>tenant/name@version</c>, or <c>merge:linear(...)</c>.</param>
/// <param name="Id">Canonical id <c>tenant/name</c> (null for a merge).</param>
/// <param name="Version">Store version (0 for a merge).</param>
/// <param name="Ref">What requests carry to the scheduler.</param>
/// <param name="PartIds">Ids a merge is made of (empty otherwise).</param>
public sealed record HostAdapter(string Key, string? Id, long Version, AdapterRef Ref, IReadOnlyList<string> PartIds)
{
    /// <summary>Bytes of the fp32 factors.</summary>
    public long Bytes => Ref.Factors.Bytes;
}

/// <summary>What the node reports about its adapters, per tier (canonical ids <c>tenant/name</c>).</summary>
public sealed record AdapterTiers(
    IReadOnlyList<string> Device,
    IReadOnlyList<string> Host,
    IReadOnlyList<string> Loading,
    IReadOnlyList<string> Pinned,
    IReadOnlyList<string> DeviceKeys,
    int Slots,
    long HostBytes,
    long HostBudgetBytes);

/// <summary>
/// The node's host tier of adapters, between the device slots (the scheduler's) and the adapter store: resolves
/// <c>model</c> names to an <see cref="AdapterRef"/> (key <c>tenant/name@version</c>), loads each adapter from the store
/// once however many requests ask for it at the same time (single flight), keeps decoded factors in an LRU bounded
/// by bytes (pinned adapters are never evicted), materialises weighted linear merges, and follows the store's
/// publish/delete events: the current-version mapping of the adapter is dropped at once, so the next request reads
/// the new version (or gets 404), while rows already running keep the <see cref="AdapterRef"/> they were given.
/// </summary>
public sealed class AdapterManager : IAdapterResidencySource, IAsyncDisposable
{
    /// <summary>Most adapters in one merge.</summary>
    public const int MaxMergeParts = 8;

    /// <summary>Distinct adapters with their own metric label; later ones count as <c>other</c>.</summary>
    public const int MaxAdapterLabels = 50;

    /// <summary>A current-version mapping is re-checked against the store after this even without events.</summary>
    public static readonly TimeSpan MappingTtl = TimeSpan.FromSeconds(30);

    private readonly ModelHost _host;
    private readonly IAdapterStore? _store;
    private readonly NodeMetrics _metrics;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly long _budget;
    private readonly CancellationTokenSource _stopping = new();
    private int _disposed;

    private readonly Lock _gate = new();
    private readonly Dictionary<string, Mapping> _current = new(StringComparer.Ordinal);
    private readonly Dictionary<string, long> _epoch = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Task<HostAdapter?>> _loading = new(StringComparer.Ordinal);
    private readonly Dictionary<string, LinkedListNode<HostAdapter>> _cache = new(StringComparer.Ordinal);
    private readonly LinkedList<HostAdapter> _lru = new(); // most recent first
    private readonly HashSet<string> _pinned = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _labels = new(StringComparer.Ordinal); // id → label
    private readonly Dictionary<string, string> _keyLabels = new(StringComparer.Ordinal); // key → label
    private long _bytes;
    private IAsyncDisposable? _subscription;

    private sealed record Mapping(string Key, long CheckedAt);

    public AdapterManager(ModelHost host, IOptions<NodeOptions> options, NodeMetrics metrics, TimeProvider time, ILogger<AdapterManager> logger,
        IAdapterStore? store = null)
    {
        _host = host;
        _store = store;
        _metrics = metrics;
        _time = time;
        _logger = logger;
        _budget = options.Value.AdapterHostCacheMiB * 1024 * 1024;
        host.Observer.AdapterLabel = Label;
        metrics.ObserveAdapters(Snapshot, () => Interlocked.Read(ref _bytes));
    }

    /// <summary>True when the node has an adapter source and device slots.</summary>
    public bool Enabled => _store is not null && _host.AdapterSlots > 0;

    /// <summary>The store adapters come from (null without one).</summary>
    public IAdapterStore? Store => _store;

    /// <summary>Subscribes to the store's publish/delete events (retrying in the background while the store is down).</summary>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (_store is null) return;
        try
        {
            _subscription = await _store.SubscribeAsync(OnEvent, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (IsStoreFailure(e))
        {
            NodeLog.AdapterSubscriptionFailed(_logger, MappingTtl.TotalSeconds, e.Message);
            _ = RetrySubscribeAsync();
        }
    }

    private async Task RetrySubscribeAsync()
    {
        while (!_stopping.IsCancellationRequested && _subscription is null)
        {
            try
            {
                await Task.Delay(TimeSpan.FromSeconds(5), _time, _stopping.Token).ConfigureAwait(false);
                _subscription = await _store!.SubscribeAsync(OnEvent, _stopping.Token).ConfigureAwait(false);
                // Events may have been missed while unsubscribed: re-check every mapping on its next use.
                lock (_gate) _current.Clear();
            }
            catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (IsStoreFailure(e))
            {
            }
        }
    }

    /// <summary>
    /// Resolves the part of <c>model</c> after <c>base:</c>: <c>tenant/name</c> (only the caller's own tenant or
    /// <c>public</c>) or <c>name</c> (the caller's tenant). <paramref name="callerTenant"/> is <c>X-Serving-Tenant</c>
    /// (null: <c>public</c>). Throws <see cref="RequestRefusedException"/> (404 unknown or not visible, 503 store down).
    /// </summary>
    public Task<AdapterRef> ResolveAsync(string adapter, string? callerTenant, string model, CancellationToken cancellationToken, string? param = "model")
    {
        var caller = callerTenant ?? ModelId.PublicTenant;
        var slash = adapter.IndexOf('/');
        var (tenant, name) = slash < 0 ? (caller, adapter) : (adapter[..slash], adapter[(slash + 1)..]);
        if (!Enabled || !IsValid(tenant, name) || (tenant != caller && tenant != ModelId.PublicTenant))
        {
            throw Refusals.ModelNotFound(model, param);
        }
        return ResolveIdAsync(tenant, name, model, cancellationToken, param);
    }

    /// <summary>
    /// <c>model</c> that is neither the base nor <c>base:...</c>: an adapter name of the caller's tenant or of
    /// <c>public</c>, when exactly one of them has it (both: 400 naming the two full ids).
    /// </summary>
    public async Task<AdapterRef> ResolveBareAsync(string name, string? callerTenant, CancellationToken cancellationToken)
    {
        var caller = callerTenant ?? ModelId.PublicTenant;
        if (!Enabled || !AdapterKeys.IsValidName(name) || !AdapterKeys.IsValidTenant(caller)) throw Refusals.ModelNotFound(name);
        if (caller == ModelId.PublicTenant) return await ResolveIdAsync(caller, name, name, cancellationToken, "model").ConfigureAwait(false);
        var own = await ExistsAsync(caller, name, cancellationToken).ConfigureAwait(false);
        var shared = await ExistsAsync(ModelId.PublicTenant, name, cancellationToken).ConfigureAwait(false);
        if (own && shared)
        {
            throw new RequestRefusedException(ErrorCodes.ModelAmbiguous,
                $"The model '{name}' is ambiguous: use '{_host.ModelId}:{caller}/{name}' or '{_host.ModelId}:{ModelId.PublicTenant}/{name}'.", "model");
        }
        if (!own && !shared) throw Refusals.ModelNotFound(name);
        return await ResolveIdAsync(own ? caller : ModelId.PublicTenant, name, name, cancellationToken, "model").ConfigureAwait(false);
    }

    private async Task<bool> ExistsAsync(string tenant, string name, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            if (_current.ContainsKey(tenant + "/" + name)) return true;
        }
        try
        {
            var meta = await _store!.GetMetadataAsync(tenant, name, null, cancellationToken).ConfigureAwait(false);
            return meta is not null && meta.BaseModel == _host.ModelId;
        }
        catch (Exception e) when (IsStoreFailure(e))
        {
            NodeLog.AdapterStoreUnavailable(_logger, e.Message);
            throw Refusals.StoreUnavailable(e.Message);
        }
    }

    /// <summary>Resolves <c>tenant/name</c> (already access-checked) to its current version's <see cref="AdapterRef"/>.</summary>
    internal async Task<AdapterRef> ResolveIdAsync(string tenant, string name, string model, CancellationToken cancellationToken, string? param)
    {
        var entry = await GetAsync(tenant, name, cancellationToken).ConfigureAwait(false);
        return entry?.Ref ?? throw Refusals.ModelNotFound(model, param);
    }

    /// <summary>The current version of <c>tenant/name</c> in the host cache, loading it once when absent; null when the store has none.</summary>
    private async Task<HostAdapter?> GetAsync(string tenant, string name, CancellationToken cancellationToken)
    {
        var id = tenant + "/" + name;
        Task<HostAdapter?> load;
        lock (_gate)
        {
            Mapping? fallback = null;
            if (_current.TryGetValue(id, out var m) && _cache.TryGetValue(m.Key, out var node))
            {
                if (_time.GetElapsedTime(m.CheckedAt) < MappingTtl)
                {
                    Touch(node);
                    _metrics.AdapterLookup("host", hit: true);
                    return node.Value;
                }
                fallback = m;
            }
            _metrics.AdapterLookup("host", hit: false);
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

    private async Task LoadAsync(string tenant, string name, string id, long epoch, Mapping? fallback, TaskCompletionSource<HostAdapter?> tcs)
    {
        var started = _time.GetTimestamp();
        try
        {
            var meta = await _store!.GetMetadataAsync(tenant, name, null, _stopping.Token).ConfigureAwait(false);
            if (meta is null)
            {
                Finish(null);
                return;
            }
            if (meta.BaseModel != _host.ModelId)
            {
                throw new RequestRefusedException(ErrorCodes.ModelNotFound,
                    $"The adapter '{id}' was made for base model '{meta.BaseModel}'; this node serves '{_host.ModelId}'.", "model");
            }
            var key = $"{id}@{meta.Version.ToString(CultureInfo.InvariantCulture)}";
            HostAdapter? cached;
            lock (_gate) cached = _cache.TryGetValue(key, out var node) ? node.Value : null;
            if (cached is not null)
            {
                Finish(cached);
                return;
            }
            var loaded = await _store.LoadAdapterAsync(tenant, name, meta.Version, _stopping.Token).ConfigureAwait(false);
            if (loaded is null)
            {
                Finish(null); // deleted between the two reads
                return;
            }
            AdapterFactors factors;
            try
            {
                factors = AdapterFactors.FromLora(_host.Config,
                    loaded.Value.Adapter.Modules.Select(m => new LoraModule(m.Module, m.Layer, m.Rank, m.Scale, m.A, m.B)));
            }
            catch (ArgumentException e)
            {
                throw new RequestRefusedException(ErrorCodes.AdapterIncompatible,
                    $"The adapter '{id}' does not fit base model '{_host.ModelId}': {e.Message}", "model");
            }
            var elapsed = _time.GetElapsedTime(started);
            _metrics.AdapterLoaded(elapsed);
            NodeLog.AdapterLoaded(_logger, key, elapsed.TotalMilliseconds, factors.Bytes);
            Finish(new HostAdapter(key, id, meta.Version, new AdapterRef(key, factors), []));
        }
        catch (Exception e) when (IsStoreFailure(e) || e is StoreCorruptException)
        {
            NodeLog.AdapterStoreUnavailable(_logger, e.Message);
            // Serve the version we had while the store is down.
            HostAdapter? stale = null;
            lock (_gate)
            {
                if (fallback is not null && _cache.TryGetValue(fallback.Key, out var node) && _epoch.GetValueOrDefault(id) == epoch) stale = node.Value;
            }
            if (stale is not null)
            {
                Finish(stale);
            }
            else
            {
                Fail(e is StoreCorruptException
                    ? new RequestRefusedException(ErrorCodes.AdapterUnavailable, $"The adapter '{id}' cannot be read from the store: {e.Message}", "model")
                    : Refusals.StoreUnavailable(e.Message));
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
                    _current[id] = new Mapping(entry.Key, _time.GetTimestamp());
                    Insert(entry);
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

    /// <summary>
    /// A weighted linear merge of adapters (ids as in <c>model</c>: <c>tenant/name</c>, <c>name</c> or <c>base:...</c>),
    /// cached under a canonical key made of the parts' versioned keys and weights.
    /// </summary>
    public async Task<AdapterRef> ResolveMergeAsync(IReadOnlyList<string> ids, IReadOnlyList<float> weights, string? callerTenant, CancellationToken cancellationToken)
    {
        var parts = new (AdapterRef Ref, float Weight)[ids.Count];
        var partIds = new string[ids.Count];
        for (var i = 0; i < ids.Count; i++)
        {
            var param = $"merged_adapters.ids[{i}]";
            var id = ids[i];
            if (id.StartsWith(_host.ModelId + ":", StringComparison.Ordinal)) id = id[(_host.ModelId.Length + 1)..];
            else if (id.Contains(':')) throw Refusals.ModelNotFound(ids[i], param);
            var r = await ResolveAsync(id, callerTenant, ids[i], cancellationToken, param).ConfigureAwait(false);
            parts[i] = (r, weights[i]);
            partIds[i] = IdOf(r.Key);
        }
        var key = "merge:linear(" + string.Join(",", parts.Select(p => p.Ref.Key + "*" + p.Weight.ToString("R", CultureInfo.InvariantCulture))) + ")";
        lock (_gate)
        {
            if (_cache.TryGetValue(key, out var node))
            {
                Touch(node);
                _metrics.AdapterLookup("host", hit: true);
                return node.Value.Ref;
            }
        }
        _metrics.AdapterLookup("host", hit: false);
        var merged = AdapterFactors.Merge(_host.Config, [.. parts.Select(p => (p.Ref.Factors, p.Weight))]);
        var entry = new HostAdapter(key, null, 0, new AdapterRef(key, merged), partIds);
        lock (_gate)
        {
            // Only cache when no part changed meanwhile (a stale merge would otherwise outlive its parts' events).
            if (partIds.All(p => _current.TryGetValue(p, out var m) && parts.Any(x => x.Ref.Key == m.Key))) Insert(entry);
        }
        return entry.Ref;
    }

    /// <summary>Loads <c>tenant/name</c> into the host cache and keeps it there (also across new versions); null when it does not exist.</summary>
    public async Task<HostAdapter?> PinAsync(string tenant, string name, CancellationToken cancellationToken)
    {
        if (!Enabled || !IsValid(tenant, name)) return null;
        lock (_gate) _pinned.Add(tenant + "/" + name);
        var entry = await GetAsync(tenant, name, cancellationToken).ConfigureAwait(false);
        if (entry is null)
        {
            lock (_gate) _pinned.Remove(tenant + "/" + name);
        }
        return entry;
    }

    /// <summary>Lets <c>tenant/name</c> be evicted again; false when it was not pinned.</summary>
    public bool Unpin(string tenant, string name)
    {
        lock (_gate)
        {
            if (!_pinned.Remove(tenant + "/" + name)) return false;
            Evict();
            return true;
        }
    }

    /// <summary>Loads <c>tenant/name</c> into the host cache (LRU as any other); null when it does not exist.</summary>
    public Task<HostAdapter?> PrefetchAsync(string tenant, string name, CancellationToken cancellationToken) =>
        Enabled && IsValid(tenant, name) ? GetAsync(tenant, name, cancellationToken) : Task.FromResult<HostAdapter?>(null);

    /// <summary>
    /// The node's adapters per tier as canonical ids <c>tenant/name</c> (the heartbeat's <c>adapters</c>): device =
    /// the scheduler's slots (merges left out), host = decoded in the cache but not in a slot, loading = store reads in flight.
    /// </summary>
    public AdapterResidency Snapshot()
    {
        var t = Tiers();
        return t.Device.Count == 0 && t.Host.Count == 0 && t.Loading.Count == 0
            ? AdapterResidency.Empty
            : new AdapterResidency { Device = t.Device, Host = t.Host, Loading = t.Loading };
    }

    /// <summary>Everything <c>/node/status</c> reports about adapters.</summary>
    public AdapterTiers Tiers()
    {
        var deviceKeys = _host.Scheduler.Status.DeviceAdapters;
        var device = deviceKeys.Where(k => !k.StartsWith("merge:", StringComparison.Ordinal)).Select(IdOf).Distinct().ToList();
        lock (_gate)
        {
            var host = _lru.Where(e => e.Id is not null && !device.Contains(e.Id)).Select(e => e.Id!).Distinct().OrderBy(x => x, StringComparer.Ordinal).ToList();
            return new AdapterTiers(device, host, [.. _loading.Keys.Order(StringComparer.Ordinal)], [.. _pinned.Order(StringComparer.Ordinal)],
                [.. deviceKeys], _host.AdapterSlots, _bytes, _budget);
        }
    }

    /// <summary>Adapters of the caller's tenant and of <c>public</c> made for this base model, as <c>base:tenant/name</c>.</summary>
    public async Task<IReadOnlyList<AdapterMetadata>> ListVisibleAsync(string? callerTenant, CancellationToken cancellationToken)
    {
        if (!Enabled) return [];
        var caller = callerTenant ?? ModelId.PublicTenant;
        var tenants = caller == ModelId.PublicTenant ? [caller] : new[] { caller, ModelId.PublicTenant };
        var list = new List<AdapterMetadata>();
        try
        {
            foreach (var t in tenants)
            {
                if (!AdapterKeys.IsValidTenant(t)) continue;
                list.AddRange((await _store!.ListAsync(t, cancellationToken).ConfigureAwait(false)).Where(m => m.BaseModel == _host.ModelId));
            }
        }
        catch (Exception e) when (IsStoreFailure(e))
        {
            NodeLog.AdapterStoreUnavailable(_logger, e.Message);
            throw Refusals.StoreUnavailable(e.Message);
        }
        return list;
    }

    private void OnEvent(AdapterEvent e)
    {
        var id = e.Tenant + "/" + e.Name;
        bool pinned;
        lock (_gate)
        {
            _epoch[id] = _epoch.GetValueOrDefault(id) + 1;
            _current.Remove(id);
            _loading.Remove(id); // requests already waiting keep their load; new ones start a fresh one
            for (var node = _lru.First; node is not null;)
            {
                var next = node.Next;
                var h = node.Value;
                if ((h.Id == id && h.Version != e.Current) || h.PartIds.Contains(id)) Remove(node);
                node = next;
            }
            pinned = _pinned.Contains(id);
        }
        NodeLog.AdapterEvent(_logger, e.Tenant, e.Name, e.Op, e.Version, e.Current);
        if (pinned && e.Current > 0) _ = ReloadPinnedAsync(e.Tenant, e.Name);
    }

    private async Task ReloadPinnedAsync(string tenant, string name)
    {
        try
        {
            await GetAsync(tenant, name, _stopping.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is RequestRefusedException or OperationCanceledException)
        {
            // The next request retries.
        }
    }

    private void Insert(HostAdapter entry)
    {
        if (_cache.TryGetValue(entry.Key, out var existing))
        {
            Touch(existing);
            return;
        }
        _cache[entry.Key] = _lru.AddFirst(entry);
        Interlocked.Add(ref _bytes, entry.Bytes);
        Evict();
    }

    /// <summary>Drops least recently used, unpinned entries (never the most recent one) until the budget holds.</summary>
    private void Evict()
    {
        for (var node = _lru.Last; node is not null && node != _lru.First && _bytes > _budget;)
        {
            var prev = node.Previous;
            if (node.Value.Id is not { } id || !_pinned.Contains(id)) Remove(node);
            node = prev;
        }
    }

    private void Remove(LinkedListNode<HostAdapter> node)
    {
        _lru.Remove(node);
        _cache.Remove(node.Value.Key);
        Interlocked.Add(ref _bytes, -node.Value.Bytes);
    }

    private void Touch(LinkedListNode<HostAdapter> node)
    {
        if (node == _lru.First) return;
        _lru.Remove(node);
        _lru.AddFirst(node);
    }

    /// <summary>Metric label of an adapter key: its id for the first <see cref="MaxAdapterLabels"/> ids, else <c>other</c>; <c>merge</c> for merges.</summary>
    private string Label(string key)
    {
        lock (_gate)
        {
            if (_keyLabels.TryGetValue(key, out var label)) return label;
            if (key.StartsWith("merge:", StringComparison.Ordinal))
            {
                label = "merge";
            }
            else
            {
                var id = IdOf(key);
                if (!_labels.TryGetValue(id, out label!))
                {
                    label = _labels.Count < MaxAdapterLabels ? id : "other";
                    if (label != "other") _labels[id] = label;
                }
            }
            if (_keyLabels.Count > 4096) _keyLabels.Clear();
            _keyLabels[key] = label;
            return label;
        }
    }

    private static string IdOf(string key)
    {
        var at = key.LastIndexOf('@');
        return at < 0 ? key : key[..at];
    }

    private static bool IsValid(string tenant, string name) => AdapterKeys.IsValidTenant(tenant) && AdapterKeys.IsValidName(name);

    /// <summary>The store is unreachable, or its connection was disposed while the node shuts down.</summary>
    private static bool IsStoreFailure(Exception e) => e is StoreUnavailableException or ObjectDisposedException;

    /// <summary>Idempotent: the container disposes this instance once per registration (it is also the residency source).</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        await _stopping.CancelAsync().ConfigureAwait(false);
        if (_subscription is not null)
        {
            try
            {
                await _subscription.DisposeAsync().ConfigureAwait(false);
            }
            catch (Exception e) when (IsStoreFailure(e))
            {
            }
        }
        _stopping.Dispose();
    }
}
