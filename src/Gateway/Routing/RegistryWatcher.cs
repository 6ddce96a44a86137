using System.Collections.Concurrent;
using System.Collections.Frozen;
using Microsoft.Extensions.Options;
using Serving.AdapterStore.Registry;
using Serving.Contracts.Registry;
using Serving.AdapterStore.Storage;
using Serving.Gateway.Telemetry;

namespace Serving.Gateway.Routing;

/// <summary>
/// Keeps <see cref="INodeView"/> current: pub/sub heartbeats update it at once, a periodic full read (every
/// <see cref="RoutingOptions.RefreshInterval"/>) drops nodes whose heartbeat key expired. While Redis is unreachable
/// the last view stays as it is, so routing goes on; for <see cref="RoutingOptions.RecoveryGrace"/> after it is back,
/// full reads only add (a restarted Redis is empty until the nodes beat again).
/// </summary>
internal sealed partial class RegistryWatcher(
    NodeRegistry registry, IOptions<RoutingOptions> options, TimeProvider time, ILogger<RegistryWatcher> logger) : BackgroundService, INodeView
{
    private readonly object _gate = new();
    // Nodes that left the view, with the timestamp (the node's own clock) of the last heartbeat the view held for them:
    // an announcement no newer than that is a late delivery from before they left, not a return (guarded by _gate).
    private readonly Dictionary<string, DateTimeOffset> _departed = new(StringComparer.Ordinal);
    private const int MaxDeparted = 4096;
    private readonly ConcurrentDictionary<string, byte> _knownModels = new(StringComparer.Ordinal);
    private NodeSnapshot _current = NodeSnapshot.Empty;
    private volatile bool _initialized;
    private volatile bool _storeDown;
    private long _fullReadsStarted;

    public NodeSnapshot Current => Volatile.Read(ref _current);

    public event Action<NodeSnapshot>? DestinationsChanged;

    public bool Initialized => _initialized;

    public IReadOnlyCollection<string> KnownModels => (IReadOnlyCollection<string>)_knownModels.Keys;

    /// <summary>
    /// Full reads started so far. A node whose key expired before read k started is gone from the view once read k
    /// is applied: tests count reads, not seconds, so a loaded machine cannot make them fail.
    /// </summary>
    internal long FullReadsStarted => Interlocked.Read(ref _fullReadsStarted);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        IAsyncDisposable? subscription = null;
        var graceUntil = DateTimeOffset.MinValue;
        using var timer = new PeriodicTimer(options.Value.RefreshInterval, time);
        // A read may not fail while Redis restarts (the client queues commands and reconnects), so the connection's
        // own failure event marks the outage too.
        void OnConnectionLost(object? sender, EventArgs e) => _storeDown = true;
        registry.ConnectionLost += OnConnectionLost;
        try
        {
            do
            {
                try
                {
                    subscription ??= await registry.SubscribeAsync(OnEvent, stoppingToken);
                    Interlocked.Increment(ref _fullReadsStarted);
                    var beats = await registry.ReadAllAsync(stoppingToken);
                    if (_storeDown)
                    {
                        LogRegistryBack(logger, beats.Count);
                        graceUntil = time.GetUtcNow() + options.Value.RecoveryGrace;
                    }
                    _storeDown = false;
                    if (time.GetUtcNow() < graceUntil) Merge(beats); // the registry may have come back empty
                    else Replace(beats);
                }
                catch (StoreUnavailableException e)
                {
                    if (!_storeDown) LogRegistryUnreachable(logger, Current.Nodes.Count, e.Message);
                    _storeDown = true;
                }
            }
            while (await timer.WaitForNextTickAsync(stoppingToken));
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
        finally
        {
            registry.ConnectionLost -= OnConnectionLost;
            if (subscription is not null)
            {
                try
                {
                    await subscription.DisposeAsync();
                }
                catch (StoreUnavailableException)
                {
                    // Shutting down with Redis gone: nothing to unsubscribe from.
                }
            }
        }
    }

    /// <summary>
    /// Applies a full read: the set of live nodes becomes exactly <paramref name="beats"/>. A node the view already holds
    /// with a newer heartbeat keeps it: an announcement applied while the read was in flight is not rolled back.
    /// </summary>
    internal void Replace(IReadOnlyList<NodeHeartbeat> beats)
    {
        Swap(old =>
        {
            var map = new Dictionary<string, NodeEntry>(StringComparer.Ordinal);
            foreach (var hb in beats) map[hb.NodeId] = Newer(old, hb);
            return map;
        });
        _initialized = true;
    }

    /// <summary>Applies a full read without dropping anyone: nodes in <paramref name="beats"/> are added or refreshed (never to an older heartbeat).</summary>
    internal void Merge(IReadOnlyList<NodeHeartbeat> beats) => Swap(old =>
    {
        var map = new Dictionary<string, NodeEntry>(old, StringComparer.Ordinal);
        foreach (var hb in beats) map[hb.NodeId] = Newer(old, hb);
        return map;
    });

    /// <summary>
    /// The entry for <paramref name="read"/>'s node: the view's own when it holds a newer heartbeat of the same run of the
    /// node (same start time), else the read's — a restarted node is taken from the read whatever its clock says.
    /// </summary>
    private static NodeEntry Newer(FrozenDictionary<string, NodeEntry> view, NodeHeartbeat read) =>
        view.TryGetValue(read.NodeId, out var held) && held.Heartbeat.StartedAt == read.StartedAt && held.Heartbeat.Timestamp > read.Timestamp
            ? held
            : new NodeEntry(read);

    /// <summary>
    /// Applies one announcement. Pub/sub delivers late under load: a heartbeat no newer than the last one the view held
    /// for a node is ignored, also after the node left (its key expired or it deregistered), so a late delivery cannot
    /// bring a dead node back until the next full read.
    /// </summary>
    internal void OnEvent(NodeRegistryEvent e) => Swap(old =>
    {
        var map = new Dictionary<string, NodeEntry>(old, StringComparer.Ordinal);
        if (e.Heartbeat is null)
        {
            map.Remove(e.NodeId);
        }
        else
        {
            if (map.TryGetValue(e.NodeId, out var existing) && existing.Heartbeat.Timestamp > e.Heartbeat.Timestamp) return map;
            if (existing is null && _departed.TryGetValue(e.NodeId, out var last) && e.Heartbeat.Timestamp <= last) return map;
            map[e.NodeId] = new NodeEntry(e.Heartbeat);
        }
        return map;
    });

    private void Swap(Func<FrozenDictionary<string, NodeEntry>, Dictionary<string, NodeEntry>> change)
    {
        NodeSnapshot old, next;
        lock (_gate)
        {
            old = _current;
            next = new NodeSnapshot(change(old.Nodes).ToFrozenDictionary(StringComparer.Ordinal), time.GetUtcNow());
            Volatile.Write(ref _current, next);
            foreach (var (id, entry) in old.Nodes)
            {
                if (!next.Nodes.ContainsKey(id)) _departed[id] = entry.Heartbeat.Timestamp;
            }
            foreach (var id in next.Nodes.Keys) _departed.Remove(id);
            if (_departed.Count > MaxDeparted) _departed.Clear(); // churn of thousands of node ids: forget, the next full read corrects
        }
        foreach (var n in next.Nodes.Values) _knownModels.TryAdd(n.Heartbeat.Model, 0);
        if (next.DestinationsDiffer(old))
        {
            foreach (var id in next.Nodes.Keys) if (!old.Nodes.ContainsKey(id)) LogNodeJoined(logger, id, next.Nodes[id].Heartbeat.BaseUrl);
            foreach (var id in old.Nodes.Keys) if (!next.Nodes.ContainsKey(id)) LogNodeLeft(logger, id);
            DestinationsChanged?.Invoke(next);
        }
    }

    [LoggerMessage(EventId = EventIds.NodeJoined, Level = LogLevel.Information, Message = "Node {NodeId} joined at {BaseUrl}")]
    private static partial void LogNodeJoined(ILogger logger, string nodeId, string baseUrl);

    [LoggerMessage(EventId = EventIds.NodeLeft, Level = LogLevel.Information, Message = "Node {NodeId} left the pool")]
    private static partial void LogNodeLeft(ILogger logger, string nodeId);

    [LoggerMessage(EventId = EventIds.RegistryUnreachable, Level = LogLevel.Warning, Message = "Node registry unreachable; routing from the last view of {NodeCount} nodes: {Reason}")]
    private static partial void LogRegistryUnreachable(ILogger logger, int nodeCount, string reason);

    [LoggerMessage(EventId = EventIds.RegistryBack, Level = LogLevel.Information, Message = "Node registry reachable again; {NodeCount} nodes live")]
    private static partial void LogRegistryBack(ILogger logger, int nodeCount);
}
