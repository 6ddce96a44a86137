using System.Text.Json.Serialization;

namespace Serving.Contracts.Registry;

/// <summary>
/// What an inference node says about itself every heartbeat: where it is, what it serves and how busy it is.
/// Serialized as JSON (snake_case names below) into the node registry (see <c>docs/gateway.md</c>).
/// </summary>
public sealed record NodeHeartbeat
{
    /// <summary>Stable id of the node process (unique across the fleet; e.g. host name + port or a GUID).</summary>
    [JsonPropertyName("node_id")] public required string NodeId { get; init; }

    /// <summary>Base URL the gateway forwards to, e.g. <c>http://10.0.0.5:8080/</c>.</summary>
    [JsonPropertyName("base_url")] public required string BaseUrl { get; init; }

    /// <summary>Base model id this node serves (the part of <c>model</c> before ':').</summary>
    [JsonPropertyName("model")] public required string Model { get; init; }

    /// <summary>Node software version.</summary>
    [JsonPropertyName("version")] public string Version { get; init; } = "";

    /// <summary>When the node process started.</summary>
    [JsonPropertyName("started_at")] public DateTimeOffset StartedAt { get; init; }

    /// <summary>Adapters by tier, as canonical ids <c>tenant/name</c>.</summary>
    [JsonPropertyName("adapters")] public AdapterResidency Adapters { get; init; } = AdapterResidency.Empty;

    /// <summary>Requests admitted but not yet running (waiting queue).</summary>
    [JsonPropertyName("queue_depth")] public int QueueDepth { get; init; }

    /// <summary>Rows currently decoding in the batch.</summary>
    [JsonPropertyName("running")] public int Running { get; init; }

    /// <summary>Largest number of rows the node runs at once (0 when unknown).</summary>
    [JsonPropertyName("max_running")] public int MaxRunning { get; init; }

    /// <summary>
    /// Most requests the node queues (waiting for a KV slot) before it refuses with 429; 0 when unknown. With
    /// <see cref="MaxRunning"/> it bounds what the gateway forwards to the node at once (docs/overload.md).
    /// </summary>
    [JsonPropertyName("max_queue")] public int MaxQueue { get; init; }

    /// <summary>
    /// Most tokens (prompt + completion) one sequence may hold on this node, vLLM's <c>max_model_len</c>; 0 when unknown.
    /// The gateway clamps a request's token reservation to it.
    /// </summary>
    [JsonPropertyName("max_model_len")] public int MaxModelLen { get; init; }

    /// <summary>Fraction of the KV cache in use, 0..1.</summary>
    [JsonPropertyName("kv_usage")] public double KvUsage { get; init; }

    /// <summary>False while the node is starting or draining: the gateway sends it nothing.</summary>
    [JsonPropertyName("ready")] public bool Ready { get; init; } = true;

    /// <summary>When this heartbeat was produced.</summary>
    [JsonPropertyName("timestamp")] public DateTimeOffset Timestamp { get; init; }
}

/// <summary>Loaded adapters per tier. Ids are canonical <c>tenant/name</c> (see <see cref="Models.ModelId"/>).</summary>
public sealed record AdapterResidency
{
    /// <summary>No adapters anywhere.</summary>
    public static readonly AdapterResidency Empty = new();

    /// <summary>In a device slot: a request runs at once.</summary>
    [JsonPropertyName("device")] public IReadOnlyList<string> Device { get; init; } = [];

    /// <summary>Decoded in the host cache: one slot copy away (~1 ms).</summary>
    [JsonPropertyName("host")] public IReadOnlyList<string> Host { get; init; } = [];

    /// <summary>Being fetched from the store right now.</summary>
    [JsonPropertyName("loading")] public IReadOnlyList<string> Loading { get; init; } = [];
}

/// <summary>Where an adapter sits on one node, best first.</summary>
public enum Residency
{
    /// <summary>Resident in a device slot.</summary>
    Device = 0,
    /// <summary>In the host cache.</summary>
    Host = 1,
    /// <summary>Being loaded.</summary>
    Loading = 2,
    /// <summary>Not on this node.</summary>
    Absent = 3,
}
