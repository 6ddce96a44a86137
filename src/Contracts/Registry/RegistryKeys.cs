namespace Serving.Contracts.Registry;

/// <summary>
/// Redis layout of the node registry. One STRING per node (JSON <see cref="NodeHeartbeat"/>, expires after the TTL),
/// a ZSET index (member node id, score = expiry in unix ms) so readers need no SCAN, and a pub/sub channel on which
/// every heartbeat is also announced. Every key carries the hash tag <c>{prefix}</c>, so on a Redis Cluster the
/// registry (a few hundred bytes per node) sits in one slot and a reader fetches all heartbeats with one MGET.
/// </summary>
public sealed class RegistryKeys(string prefix = RegistryKeys.DefaultPrefix)
{
    /// <summary>Default key prefix.</summary>
    public const string DefaultPrefix = "reg";

    /// <summary>Default heartbeat TTL: a node that stops heartbeating leaves the pool within this.</summary>
    public static readonly TimeSpan DefaultTtl = TimeSpan.FromSeconds(6);

    /// <summary>Default heartbeat period (a third of the TTL, so one lost beat is harmless).</summary>
    public static readonly TimeSpan DefaultInterval = TimeSpan.FromSeconds(2);

    /// <summary>STRING holding the node's last heartbeat as JSON, with the TTL.</summary>
    public string Node(string nodeId) => $"{{{prefix}}}:node:{nodeId}";

    /// <summary>ZSET of node ids, score = expiry (unix ms) of the last heartbeat.</summary>
    public string Index => $"{{{prefix}}}:nodes";

    /// <summary>Pub/sub channel: every heartbeat JSON, and <c>{"node_id":..,"gone":true}</c> on orderly shutdown.</summary>
    public string Channel => $"{prefix}:events";
}
