namespace Serving.Inference.Node.Telemetry;

/// <summary>
/// Event ids of the node's <c>[LoggerMessage]</c> logs. Serving.Inference.Node owns 1000–1999; each assembly's range is
/// in the table of <c>docs/telemetry.md</c>, and a test fails when two logs of the one-process host share an id.
/// </summary>
internal static class EventIds
{
    // Model and requests: 1000–1009.

    /// <summary>The model is loaded.</summary>
    public const int ModelLoaded = 1000;

    /// <summary>A request was admitted into the batch.</summary>
    public const int RequestStarted = 1001;

    /// <summary>A request ended.</summary>
    public const int RequestFinished = 1002;

    /// <summary>A request was refused (queue full, draining).</summary>
    public const int RequestRefused = 1003;

    /// <summary>A client went away; its request was cancelled.</summary>
    public const int ClientDisconnected = 1004;

    /// <summary>A scheduler iteration failed.</summary>
    public const int StepFailed = 1005;

    /// <summary>The node starts draining.</summary>
    public const int Draining = 1006;

    /// <summary>The scheduler stopped.</summary>
    public const int Stopped = 1007;

    /// <summary>A request was refused as invalid (4xx).</summary>
    public const int InvalidRequest = 1008;

    /// <summary>A request's decoding strategy held no row without being done; the request was ended with an abort.</summary>
    public const int StrategyStalled = 1009;

    // Adapters: 1010–1099.

    /// <summary>An adapter was copied into a device slot.</summary>
    public const int AdapterActivated = 1010;

    /// <summary>An adapter was read from the store into the host cache.</summary>
    public const int AdapterLoaded = 1011;

    /// <summary>A publish or delete event dropped a stale mapping.</summary>
    public const int AdapterEvent = 1012;

    /// <summary>The adapter store is unreachable.</summary>
    public const int AdapterStoreUnavailable = 1013;

    /// <summary>A folder of the adapter directory failed validation.</summary>
    public const int AdapterFolderSkipped = 1014;

    /// <summary>The adapter directory was loaded.</summary>
    public const int AdapterDirectoryLoaded = 1015;

    /// <summary>The subscription to store events failed; mappings expire instead.</summary>
    public const int AdapterSubscriptionFailed = 1016;

    // Reward heads: 1200–1299.

    /// <summary>A reward head was loaded (from a folder or the store).</summary>
    public const int RewardHeadLoaded = 1200;

    /// <summary>A publish or delete event dropped a cached reward head.</summary>
    public const int RewardHeadEvent = 1201;

    /// <summary>The store could not be read for a reward head.</summary>
    public const int RewardHeadStoreUnavailable = 1202;

    /// <summary>The subscription to reward head events failed; cached heads expire instead.</summary>
    public const int RewardHeadSubscriptionFailed = 1203;

    /// <summary>A replaced Otter head is kept (its sessions) until the node stops.</summary>
    public const int RewardHeadRetired = 1204;

    // OpenAI request surface (fields, tool calls): 1300–1319.

    /// <summary>A request field that changes nothing here (user, store, metadata, ...) was accepted; logged once per field.</summary>
    public const int IgnoredField = 1300;

    /// <summary>The model's output looked like a tool call but did not parse as one; it is returned as text.</summary>
    public const int ToolCallUnparsed = 1301;

    // Registry: 1100–1199.

    /// <summary>The node joins the registry.</summary>
    public const int RegistryJoined = 1101;

    /// <summary>The node does not join the registry.</summary>
    public const int RegistryNotJoined = 1102;
}
