using System.Globalization;
using Serving.AdapterStore.RewardHeads;
using Serving.AdapterStore.Storage;
using Serving.Checkpoints.RewardHeads;
using Serving.Contracts.Errors;
using Serving.Inference.Node.Adapters;
using Serving.Inference.Node.Hosting;
using Serving.Inference.Node.OpenAI;
using Serving.Inference.Node.Telemetry;
using Serving.Inference.Rewards;

namespace Serving.Inference.Node.RewardHeads;

/// <summary>
/// Reward heads from the store (<c>Node:Redis</c>): each <c>tenant/name</c> is read and validated against the node's model
/// once however many requests ask at the same time (single flight), then cached (at most
/// <see cref="NodeOptions.RewardHeadCacheSize"/> heads, least recently used out first). A publish or delete event drops
/// the cached copy at once (a load the event overtook does not install its result: epochs); without events a cached
/// head's version is re-checked after <see cref="AdapterManager.MappingTtl"/>. While the store is unreachable the copy
/// cached before is served.
/// <para>
/// Requests hold the <see cref="RewardHead"/> they resolved, so running rows keep the version they started with. A
/// head-only head owns no native state. An Otter head owns ONNX sessions, and the decoder keeps a side runtime bound to
/// them for as long as it lives; so a replaced or evicted Otter head is not disposed but handed to
/// <see cref="ModelHost.DisposeAfterDecoder"/>, which releases it after the decoder when the node stops (memory grows by
/// one side network per republished Otter head until then; logged).
/// </para>
/// Lock order: this type's lock only; no call into the store or the model under it.
/// </summary>
public sealed class StoreRewardHeadSource : IRewardHeadSource, IAsyncDisposable
{
    private readonly IRewardHeadStore _store;
    private readonly ModelHost _host;
    private readonly int _capacity;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stopping = new();
    private readonly Lock _gate = new();
    private readonly Dictionary<string, Entry> _cache = new(StringComparer.Ordinal);
    private readonly Dictionary<string, long> _epoch = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Task<RewardHead?>> _loading = new(StringComparer.Ordinal);
    private IAsyncDisposable? _subscription;
    private long _clock;

    private sealed class Entry(RewardHead head, long version, long checkedAt)
    {
        public RewardHead Head { get; } = head;
        public long Version { get; } = version;
        public long CheckedAt { get; set; } = checkedAt;
        public long LastUsed { get; set; }
    }

    /// <summary>A source over <paramref name="store"/> for the model of <paramref name="host"/>.</summary>
    public StoreRewardHeadSource(IRewardHeadStore store, ModelHost host, int capacity, TimeProvider time, ILogger<StoreRewardHeadSource> logger)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        _store = store;
        _host = host;
        _capacity = capacity;
        _time = time;
        _logger = logger;
    }

    /// <inheritdoc />
    public string Name => "store";

    /// <summary>Keys (<c>tenant/name@version</c>) of the cached heads, sorted.</summary>
    public IReadOnlyList<string> Cached
    {
        get
        {
            lock (_gate) return [.. _cache.Values.Select(e => e.Head.Key).Order(StringComparer.Ordinal)];
        }
    }

    /// <summary>Test hook: runs when a load has read the metadata, before it reads the payload.</summary>
    internal Func<Task>? BeforePayloadRead { get; set; }

    /// <summary>Subscribes to the store's events (retrying in the background while the store is down).</summary>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        try
        {
            _subscription = await _store.SubscribeAsync(OnEvent, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (AdapterManager.IsStoreFailure(e))
        {
            NodeLog.RewardHeadSubscriptionFailed(_logger, AdapterManager.MappingTtl.TotalSeconds, e.Message);
            _ = RetrySubscribeAsync();
        }
    }

    /// <inheritdoc />
    public async ValueTask<RewardHead?> FindAsync(string tenant, string name, CancellationToken cancellationToken)
    {
        var id = tenant + "/" + name;
        Task<RewardHead?> load;
        lock (_gate)
        {
            if (_cache.TryGetValue(id, out var entry) && _time.GetElapsedTime(entry.CheckedAt) < AdapterManager.MappingTtl)
            {
                entry.LastUsed = ++_clock;
                return entry.Head;
            }
            if (!_loading.TryGetValue(id, out load!))
            {
                var epoch = _epoch.GetValueOrDefault(id);
                var tcs = new TaskCompletionSource<RewardHead?>(TaskCreationOptions.RunContinuationsAsynchronously);
                _loading[id] = load = tcs.Task;
                _ = Task.Run(() => LoadAsync(tenant, name, id, epoch, tcs));
            }
        }
        return await load.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    private async Task LoadAsync(string tenant, string name, string id, long epoch, TaskCompletionSource<RewardHead?> tcs)
    {
        var started = _time.GetTimestamp();
        try
        {
            var meta = await _store.GetMetadataAsync(tenant, name, null, _stopping.Token).ConfigureAwait(false);
            if (meta is null)
            {
                Finish(null, 0);
                return;
            }
            if (meta.BaseModel != _host.ModelId)
            {
                throw new RequestRefusedException(ErrorCodes.RewardHeadIncompatible,
                    $"The reward head '{id}' was made for base model '{meta.BaseModel}', not '{_host.ModelId}': name a head made for '{_host.ModelId}' in reward_head.", "reward_head");
            }
            lock (_gate)
            {
                // Same version as the cached copy: only the check time moves.
                if (_cache.TryGetValue(id, out var cached) && cached.Version == meta.Version && _epoch.GetValueOrDefault(id) == epoch)
                {
                    cached.CheckedAt = _time.GetTimestamp();
                    cached.LastUsed = ++_clock;
                    _loading.Remove(id);
                    tcs.SetResult(cached.Head);
                    return;
                }
            }
            if (BeforePayloadRead is { } hook) await hook().ConfigureAwait(false);
            var stored = await _store.ReadAsync(tenant, name, meta.Version, _stopping.Token).ConfigureAwait(false);
            if (stored is null)
            {
                Finish(null, 0); // deleted between the two reads
                return;
            }
            var head = Build(id, stored);
            NodeLog.RewardHeadLoaded(_logger, head.Key, stored.Metadata.Kind, Name, _time.GetElapsedTime(started).TotalMilliseconds);
            Finish(head, stored.Metadata.Version);
        }
        catch (Exception e) when (AdapterManager.IsStoreFailure(e) || e is StoreCorruptException)
        {
            NodeLog.RewardHeadStoreUnavailable(_logger, e.Message);
            RewardHead? stale = null;
            lock (_gate)
            {
                // Serve the version we had while the store is down (unless an event said it changed).
                if (_epoch.GetValueOrDefault(id) == epoch && _cache.TryGetValue(id, out var cached)) stale = cached.Head;
            }
            if (stale is not null)
            {
                lock (_gate) _loading.Remove(id);
                tcs.SetResult(stale);
            }
            else
            {
                Fail(e is StoreCorruptException
                    ? new RequestRefusedException(ErrorCodes.RewardHeadUnavailable, $"The reward head '{id}' cannot be read from the store: {e.Message}", "reward_head")
                    : new RequestRefusedException(ErrorCodes.StoreUnavailable, $"The reward head store is unreachable; retry later. ({e.Message})", "reward_head"));
            }
        }
        catch (Exception e) when (e is RequestRefusedException or OperationCanceledException)
        {
            Fail(e);
        }

        void Finish(RewardHead? head, long version)
        {
            RewardHead? retired = null;
            lock (_gate)
            {
                _loading.Remove(id);
                if (_epoch.GetValueOrDefault(id) == epoch)
                {
                    if (_cache.Remove(id, out var old) && !ReferenceEquals(old.Head, head)) retired = old.Head;
                    if (head is not null)
                    {
                        _cache[id] = new Entry(head, version, _time.GetTimestamp()) { LastUsed = ++_clock };
                        if (_cache.Count > _capacity) retired ??= EvictLeastRecentlyUsed(id);
                    }
                }
            }
            if (retired is not null) Retire(retired);
            tcs.SetResult(head);
        }

        void Fail(Exception e)
        {
            lock (_gate) _loading.Remove(id);
            tcs.SetException(e);
        }
    }

    /// <summary>Validates the stored files against this node's model and binds them (the store validated them against the same base id).</summary>
    private RewardHead Build(string id, StoredRewardHead stored)
    {
        var key = $"{id}@{stored.Metadata.Version.ToString(CultureInfo.InvariantCulture)}";
        var files = stored.Files;
        try
        {
            RewardHead head = files.IsOtter
                ? new RewardHead(OtterReader.Read(files.ConfigJson, files.Tensors, _host.Config), _host.Model, key)
                : new RewardHead(RewardHeadReader.Read(files.ConfigJson, files.Tensors, _host.Config), _host.Model, key);
            // An Otter head's sessions live until the node stops (see the type's remarks); a head-only head owns nothing native.
            if (head.Side is not null) _host.DisposeAfterDecoder(head);
            return head;
        }
        catch (Exception e) when (e is RewardHeadFormatException or ArgumentException or InvalidOperationException)
        {
            throw new RequestRefusedException(ErrorCodes.RewardHeadIncompatible,
                $"The reward head '{id}' does not fit this node's model '{_host.ModelId}': {e.Message}", "reward_head");
        }
    }

    /// <summary>Removes the least recently used head other than <paramref name="keep"/>; returns it.</summary>
    private RewardHead? EvictLeastRecentlyUsed(string keep)
    {
        string? victim = null;
        long oldest = long.MaxValue;
        foreach (var (id, e) in _cache)
        {
            if (id != keep && e.LastUsed < oldest)
            {
                oldest = e.LastUsed;
                victim = id;
            }
        }
        if (victim is null || !_cache.Remove(victim, out var entry)) return null;
        _epoch[victim] = _epoch.GetValueOrDefault(victim) + 1;
        return entry.Head;
    }

    private void Retire(RewardHead head)
    {
        // The cache lets go; requests that hold the head keep using it. Otter heads were handed to the model host at load.
        if (head.Side is not null) NodeLog.RewardHeadRetired(_logger, head.Key, Interlocked.Increment(ref _retiredOtter));
    }

    private int _retiredOtter;

    /// <summary>
    /// A store event for <c>tenant/name</c>: the cached copy (unless it is the current version) and any load in flight are
    /// forgotten; requests already waiting keep their load, new ones start a fresh one.
    /// </summary>
    internal void Invalidate(string tenant, string name, long current)
    {
        var id = tenant + "/" + name;
        RewardHead? retired = null;
        lock (_gate)
        {
            _epoch[id] = _epoch.GetValueOrDefault(id) + 1;
            _loading.Remove(id);
            if (_cache.TryGetValue(id, out var e) && e.Version != current)
            {
                _cache.Remove(id);
                retired = e.Head;
            }
        }
        if (retired is not null) Retire(retired);
    }

    private void OnEvent(RewardHeadEvent e)
    {
        Invalidate(e.Tenant, e.Name, e.Current);
        NodeLog.RewardHeadEvent(_logger, e.Tenant, e.Name, e.Op, e.Version, e.Current);
    }

    private async Task RetrySubscribeAsync()
    {
        while (!_stopping.IsCancellationRequested && _subscription is null)
        {
            try
            {
                await Task.Delay(TimeSpan.FromSeconds(5), _time, _stopping.Token).ConfigureAwait(false);
                _subscription = await _store.SubscribeAsync(OnEvent, _stopping.Token).ConfigureAwait(false);
                // Events may have been missed: every cached head is re-checked on its next use.
                lock (_gate)
                {
                    foreach (var e in _cache.Values) e.CheckedAt = long.MinValue / 2;
                }
            }
            catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (AdapterManager.IsStoreFailure(e))
            {
            }
        }
    }

    /// <summary>Ends the subscription; cached heads are the model host's to release.</summary>
    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync().ConfigureAwait(false);
        if (_subscription is not null)
        {
            try
            {
                await _subscription.DisposeAsync().ConfigureAwait(false);
            }
            catch (Exception e) when (AdapterManager.IsStoreFailure(e))
            {
            }
        }
        _stopping.Dispose();
    }
}
