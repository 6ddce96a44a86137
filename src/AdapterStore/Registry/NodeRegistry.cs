using System.Text.Json;
using Serving.Contracts.Registry;
using Serving.AdapterStore.Storage;
using StackExchange.Redis;

namespace Serving.AdapterStore.Registry;

/// <summary>A registry event: a heartbeat, or a node that left in an orderly way.</summary>
/// <param name="NodeId">Node id.</param>
/// <param name="Heartbeat">The heartbeat, null when the node left.</param>
public sealed record NodeRegistryEvent(string NodeId, NodeHeartbeat? Heartbeat);

/// <summary>
/// Redis-backed node registry (layout in <see cref="RegistryKeys"/>): nodes write heartbeats with a TTL, the gateway
/// reads the live set and subscribes to announcements. Redis failures surface as <see cref="StoreUnavailableException"/>.
/// </summary>
public sealed class NodeRegistry
{
    private const string What = "The node registry (Redis)";
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);
    private readonly IConnectionMultiplexer _redis;
    private readonly RegistryKeys _keys;
    private readonly TimeProvider _time;

    /// <summary>A registry over an open connection.</summary>
    public NodeRegistry(IConnectionMultiplexer redis, RegistryKeys? keys = null, TimeProvider? time = null)
    {
        _redis = redis;
        _keys = keys ?? new RegistryKeys();
        _time = time ?? TimeProvider.System;
        redis.ConnectionFailed += (_, _) => ConnectionLost?.Invoke(this, EventArgs.Empty);
    }

    /// <summary>Key layout in use.</summary>
    public RegistryKeys Keys => _keys;

    /// <summary>
    /// Raised when the connection to Redis fails (the server went away): a reader should not trust the next full read
    /// to be complete, since a restarted Redis may have lost the heartbeats.
    /// </summary>
    public event EventHandler? ConnectionLost;

    /// <summary>
    /// Writes the heartbeat (STRING with <paramref name="ttl"/>), moves the node's expiry in the index and announces it.
    /// A node calls this every <see cref="RegistryKeys.DefaultInterval"/>; a missed TTL removes it from the pool.
    /// </summary>
    public Task PublishHeartbeatAsync(NodeHeartbeat heartbeat, TimeSpan ttl, CancellationToken cancellationToken = default) =>
        RedisFailures.GuardAsync(What, () => PublishCoreAsync(heartbeat, ttl, cancellationToken));

    private async Task PublishCoreAsync(NodeHeartbeat heartbeat, TimeSpan ttl, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(heartbeat.NodeId);
        cancellationToken.ThrowIfCancellationRequested();
        string json = JsonSerializer.Serialize(heartbeat, Json);
        long expiry = _time.GetUtcNow().Add(ttl).ToUnixTimeMilliseconds();
        var db = _redis.GetDatabase();
        var batch = db.CreateBatch();
        var set = batch.StringSetAsync(_keys.Node(heartbeat.NodeId), json, ttl);
        var index = batch.SortedSetAddAsync(_keys.Index, heartbeat.NodeId, expiry);
        var announce = batch.PublishAsync(RedisChannel.Literal(_keys.Channel), json);
        batch.Execute();
        await Task.WhenAll(set, index, announce).WaitAsync(cancellationToken);
    }

    /// <summary>Removes the node at once (orderly shutdown) and announces it.</summary>
    public Task RemoveAsync(string nodeId, CancellationToken cancellationToken = default) =>
        RedisFailures.GuardAsync(What, () => RemoveCoreAsync(nodeId, cancellationToken));

    private async Task RemoveCoreAsync(string nodeId, CancellationToken cancellationToken)
    {
        var db = _redis.GetDatabase();
        await db.KeyDeleteAsync(_keys.Node(nodeId)).WaitAsync(cancellationToken);
        await db.SortedSetRemoveAsync(_keys.Index, nodeId).WaitAsync(cancellationToken);
        await db.PublishAsync(RedisChannel.Literal(_keys.Channel), JsonSerializer.Serialize(new { node_id = nodeId, gone = true })).WaitAsync(cancellationToken);
    }

    /// <summary>Every node whose heartbeat has not expired. Prunes index entries that expired long ago.</summary>
    public Task<IReadOnlyList<NodeHeartbeat>> ReadAllAsync(CancellationToken cancellationToken = default) =>
        RedisFailures.GuardAsync(What, () => ReadAllCoreAsync(cancellationToken));

    private async Task<IReadOnlyList<NodeHeartbeat>> ReadAllCoreAsync(CancellationToken cancellationToken)
    {
        var db = _redis.GetDatabase();
        long now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        var ids = await db.SortedSetRangeByScoreAsync(_keys.Index, now, double.PositiveInfinity).WaitAsync(cancellationToken);
        // Entries a minute past their expiry belong to nodes that died; keep the index small.
        _ = db.SortedSetRemoveRangeByScoreAsync(_keys.Index, double.NegativeInfinity, now - 60_000, flags: CommandFlags.FireAndForget);
        if (ids.Length == 0) return [];
        var values = await db.StringGetAsync(ids.Select(i => (RedisKey)_keys.Node(i!)).ToArray()).WaitAsync(cancellationToken);
        var result = new List<NodeHeartbeat>(values.Length);
        foreach (var v in values)
        {
            if (v.IsNullOrEmpty) continue;
            if (TryParse(v!, out var hb) && hb.Heartbeat is { } h) result.Add(h);
        }
        return result;
    }

    /// <summary>Receives heartbeats and departures until the returned handle is disposed.</summary>
    public Task<IAsyncDisposable> SubscribeAsync(Action<NodeRegistryEvent> handler, CancellationToken cancellationToken = default) =>
        RedisFailures.GuardAsync(What, () => SubscribeCoreAsync(handler, cancellationToken));

    private async Task<IAsyncDisposable> SubscribeCoreAsync(Action<NodeRegistryEvent> handler, CancellationToken cancellationToken)
    {
        var subscriber = _redis.GetSubscriber();
        var channel = RedisChannel.Literal(_keys.Channel);
        var queue = await subscriber.SubscribeAsync(channel).WaitAsync(cancellationToken);
        queue.OnMessage(m =>
        {
            if (TryParse(m.Message!, out var e)) handler(e);
        });
        return new Subscription(queue);
    }

    /// <summary>Parses a registry value or announcement; false for anything malformed (never throws).</summary>
    public static bool TryParse(string json, out NodeRegistryEvent registryEvent)
    {
        registryEvent = null!;
        try
        {
            using var doc = JsonDocument.Parse(json);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("node_id", out var id) || id.ValueKind != JsonValueKind.String) return false;
            if (root.TryGetProperty("gone", out var gone) && gone.ValueKind == JsonValueKind.True)
            {
                registryEvent = new NodeRegistryEvent(id.GetString()!, null);
                return true;
            }
            var hb = root.Deserialize<NodeHeartbeat>(Json);
            if (hb is null || string.IsNullOrEmpty(hb.BaseUrl) || string.IsNullOrEmpty(hb.Model)) return false;
            registryEvent = new NodeRegistryEvent(hb.NodeId, hb);
            return true;
        }
        catch (JsonException)
        {
            return false;
        }
    }

    private sealed class Subscription(ChannelMessageQueue queue) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync() => await RedisFailures.GuardAsync(What, () => queue.UnsubscribeAsync());
    }
}
