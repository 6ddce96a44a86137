using Microsoft.Extensions.Options;
using Serving.AdapterStore.Storage;
using Serving.Contracts.Registry;
using Serving.Inference.Node.Hosting;
using Serving.Inference.Node.OpenAI;
using Serving.Inference.Node.Registry;
using Serving.Inference.Node.Telemetry;
using Serving.Inference.Scheduling;

namespace Serving.Inference.Node.Adapters;

/// <summary>
/// The node's host tier of adapters, between the device slots (the scheduler's) and the adapter store. A thin
/// coordinator over one type per job: <see cref="AdapterResolver"/> (names and visibility), <see cref="AdapterLoader"/>
/// (current versions, single-flight loads), <see cref="HostAdapterCache"/> (LRU by bytes, pins),
/// <see cref="AdapterMerger"/> (weighted linear merges), <see cref="AdapterEventSubscription"/> (the store's
/// publish/delete events) and <see cref="AdapterMetricLabels"/>. Without a store (or device slots) it serves nothing
/// and every adapter name is absent.
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
    private readonly HostAdapterCache _cache;
    private readonly AdapterLoader? _loader;
    private readonly AdapterResolver? _resolver;
    private readonly AdapterMerger? _merger;
    private readonly AdapterEventSubscription? _events;
    private readonly CancellationTokenSource _stopping = new();
    private int _disposed;

    public AdapterManager(ModelHost host, IOptions<NodeOptions> options, NodeMetrics metrics, TimeProvider time, ILogger<AdapterManager> logger,
        IAdapterStore? store = null)
    {
        _host = host;
        Store = store;
        _cache = new HostAdapterCache(options.Value.AdapterHostCacheMiB * 1024 * 1024);
        if (store is not null)
        {
            _loader = new AdapterLoader(store, _cache, host.Config, host.ModelId, metrics, time, logger, _stopping.Token);
            _resolver = new AdapterResolver(store, _loader, host.ModelId, logger);
            _merger = new AdapterMerger(_resolver, _loader, _cache, host.Config, host.ModelId, metrics);
            _events = new AdapterEventSubscription(store, _loader, _cache, time, logger);
        }
        host.Observer.AdapterLabel = new AdapterMetricLabels().Label;
        metrics.ObserveAdapters(Snapshot, () => _cache.Bytes);
    }

    /// <summary>True when the node has an adapter source and device slots.</summary>
    public bool Enabled => Store is not null && _host.AdapterSlots > 0;

    /// <summary>The store adapters come from (null without one).</summary>
    public IAdapterStore? Store { get; }

    /// <summary>Subscribes to the store's publish/delete events (retrying in the background while the store is down).</summary>
    public Task StartAsync(CancellationToken cancellationToken) => _events?.StartAsync(cancellationToken) ?? Task.CompletedTask;

    /// <summary>
    /// Resolves the part of <c>model</c> after <c>base:</c>: <c>tenant/name</c> (only the caller's own tenant or
    /// <c>public</c>) or <c>name</c> (the caller's tenant). <paramref name="callerTenant"/> is <c>X-Serving-Tenant</c>
    /// (null: <c>public</c>). Throws a refusal (404 unknown or not visible, 503 store down).
    /// </summary>
    public Task<AdapterRef> ResolveAsync(string adapter, string? callerTenant, string model, CancellationToken cancellationToken, string? param = "model") =>
        Enabled ? _resolver!.ResolveAsync(adapter, callerTenant, model, cancellationToken, param) : throw Refusals.ModelNotFound(model, param);

    /// <summary>
    /// <c>model</c> that is neither the base nor <c>base:...</c>: an adapter name of the caller's tenant or of
    /// <c>public</c>, when exactly one of them has it (both: 400 naming the two full ids).
    /// </summary>
    public Task<AdapterRef> ResolveBareAsync(string name, string? callerTenant, CancellationToken cancellationToken) =>
        Enabled ? _resolver!.ResolveBareAsync(name, callerTenant, cancellationToken) : throw Refusals.ModelNotFound(name);

    /// <summary>
    /// A weighted linear merge of adapters (ids as in <c>model</c>: <c>tenant/name</c>, <c>name</c> or <c>base:...</c>),
    /// cached under a canonical key made of the parts' versioned keys and weights.
    /// </summary>
    public Task<AdapterRef> ResolveMergeAsync(IReadOnlyList<string> ids, IReadOnlyList<float> weights, string? callerTenant, CancellationToken cancellationToken) =>
        Enabled ? _merger!.MergeAsync(ids, weights, callerTenant, cancellationToken) : throw Refusals.ModelNotFound(ids[0], "merged_adapters.ids[0]");

    /// <summary>Loads <c>tenant/name</c> into the host cache and keeps it there (also across new versions); null when it does not exist.</summary>
    public async Task<HostAdapter?> PinAsync(string tenant, string name, CancellationToken cancellationToken)
    {
        if (!Enabled || !AdapterResolver.IsValid(tenant, name)) return null;
        _cache.Pin(tenant + "/" + name);
        var entry = await _loader!.GetAsync(tenant, name, cancellationToken).ConfigureAwait(false);
        if (entry is null) _cache.Unpin(tenant + "/" + name);
        return entry;
    }

    /// <summary>Lets <c>tenant/name</c> be evicted again; false when it was not pinned.</summary>
    public bool Unpin(string tenant, string name) => _cache.Unpin(tenant + "/" + name);

    /// <summary>Loads <c>tenant/name</c> into the host cache (LRU as any other); null when it does not exist.</summary>
    public Task<HostAdapter?> PrefetchAsync(string tenant, string name, CancellationToken cancellationToken) =>
        Enabled && AdapterResolver.IsValid(tenant, name) ? _loader!.GetAsync(tenant, name, cancellationToken) : Task.FromResult<HostAdapter?>(null);

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
        var device = deviceKeys.Where(k => !k.StartsWith("merge:", StringComparison.Ordinal)).Select(HostAdapter.IdOf).Distinct().ToList();
        var (cached, pinned) = _cache.Snapshot();
        return new AdapterTiers(device, [.. cached.Where(id => !device.Contains(id))], _loader?.Loading() ?? [], pinned,
            [.. deviceKeys], _host.AdapterSlots, _cache.Bytes, _cache.BudgetBytes);
    }

    /// <summary>Adapters of the caller's tenant and of <c>public</c> made for this base model, as <c>base:tenant/name</c>.</summary>
    public Task<IReadOnlyList<AdapterMetadata>> ListVisibleAsync(string? callerTenant, CancellationToken cancellationToken) =>
        Enabled ? _resolver!.ListVisibleAsync(callerTenant, cancellationToken) : Task.FromResult<IReadOnlyList<AdapterMetadata>>([]);

    /// <summary>The store is unreachable, or its connection was disposed while the node shuts down.</summary>
    internal static bool IsStoreFailure(Exception e) => e is StoreUnavailableException or ObjectDisposedException;

    /// <summary>Idempotent: the container disposes this instance once per registration (it is also the residency source).</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        await _stopping.CancelAsync().ConfigureAwait(false);
        if (_events is not null) await _events.DisposeAsync().ConfigureAwait(false);
        _stopping.Dispose();
    }
}
