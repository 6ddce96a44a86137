namespace Serving.Inference.Node.Telemetry;

/// <summary>The node's log messages (stable event ids; no prompt or output text is ever logged).</summary>
internal static partial class NodeLog
{
    [LoggerMessage(EventId = EventIds.ModelLoaded, Level = LogLevel.Information,
        Message = "Loaded model {ModelId} ({Architecture}) with {Slots} KV slots of {MaxContext} tokens in {ElapsedMs} ms; default chat template: {DefaultTemplate}")]
    public static partial void ModelLoaded(ILogger logger, string modelId, string architecture, int slots, int maxContext, long elapsedMs, bool defaultTemplate);

    [LoggerMessage(EventId = EventIds.RequestStarted, Level = LogLevel.Information, Message = "Request {RequestId} started: {PromptTokens} prompt tokens, {Choices} choices, queued {QueuedMs} ms")]
    public static partial void RequestStarted(ILogger logger, string? requestId, int promptTokens, int choices, long queuedMs);

    [LoggerMessage(EventId = EventIds.RequestFinished, Level = LogLevel.Information, Message = "Request {RequestId} finished ({FinishReason}) after {CompletionTokens} tokens")]
    public static partial void RequestFinished(ILogger logger, string? requestId, string finishReason, int completionTokens);

    [LoggerMessage(EventId = EventIds.RequestRefused, Level = LogLevel.Warning, Message = "Request {RequestId} refused: {Reason}")]
    public static partial void RequestRefused(ILogger logger, string requestId, string reason);

    [LoggerMessage(EventId = EventIds.ClientDisconnected, Level = LogLevel.Information, Message = "Client disconnected; request {RequestId} cancelled")]
    public static partial void ClientDisconnected(ILogger logger, string requestId);

    [LoggerMessage(EventId = EventIds.StepFailed, Level = LogLevel.Error, Message = "A scheduler iteration failed; running requests were ended")]
    public static partial void StepFailed(ILogger logger, Exception error);

    [LoggerMessage(EventId = EventIds.StrategyStalled, Level = LogLevel.Error, Message = "Request {RequestId} ({Method}) held no KV row without being done; it was ended with an abort (a decoding strategy defect)")]
    public static partial void StrategyStalled(ILogger logger, string requestId, string method);

    [LoggerMessage(EventId = EventIds.Draining, Level = LogLevel.Information, Message = "Draining: {Running} running and {Waiting} waiting requests")]
    public static partial void Draining(ILogger logger, int running, int waiting);

    [LoggerMessage(EventId = EventIds.Stopped, Level = LogLevel.Information, Message = "Scheduler stopped")]
    public static partial void Stopped(ILogger logger);

    [LoggerMessage(EventId = EventIds.InvalidRequest, Level = LogLevel.Information, Message = "Invalid request {RequestId}: {Param}")]
    public static partial void InvalidRequest(ILogger logger, string requestId, string? param);

    [LoggerMessage(EventId = EventIds.AdapterActivated, Level = LogLevel.Debug, Message = "Adapter {Key} activated in slot {Slot} (evicted {Evicted}) in {CopyMs} ms")]
    public static partial void AdapterActivated(ILogger logger, string key, int slot, string? evicted, double copyMs);

    [LoggerMessage(EventId = EventIds.AdapterLoaded, Level = LogLevel.Information, Message = "Adapter {Key} loaded from the store in {ElapsedMs} ms ({Bytes} bytes)")]
    public static partial void AdapterLoaded(ILogger logger, string key, double elapsedMs, long bytes);

    [LoggerMessage(EventId = EventIds.AdapterEvent, Level = LogLevel.Information, Message = "Adapter {Tenant}/{Name}: {Op} v{Version} (current {Current}); stale mapping dropped")]
    public static partial void AdapterEvent(ILogger logger, string tenant, string name, string op, long version, long current);

    [LoggerMessage(EventId = EventIds.AdapterStoreUnavailable, Level = LogLevel.Warning, Message = "Adapter store unreachable: {Reason}")]
    public static partial void AdapterStoreUnavailable(ILogger logger, string reason);

    [LoggerMessage(EventId = EventIds.AdapterFolderSkipped, Level = LogLevel.Error, Message = "Adapter folder {Folder} skipped: {Reason}")]
    public static partial void AdapterFolderSkipped(ILogger logger, string folder, string reason);

    [LoggerMessage(EventId = EventIds.AdapterDirectoryLoaded, Level = LogLevel.Information, Message = "Adapter directory {Directory}: {Count} adapters served as tenant public")]
    public static partial void AdapterDirectoryLoaded(ILogger logger, string directory, int count);

    [LoggerMessage(EventId = EventIds.AdapterSubscriptionFailed, Level = LogLevel.Warning, Message = "Adapter event subscription failed; mappings expire after {TtlSeconds} s instead: {Reason}")]
    public static partial void AdapterSubscriptionFailed(ILogger logger, double ttlSeconds, string reason);

    [LoggerMessage(EventId = EventIds.RewardHeadLoaded, Level = LogLevel.Information, Message = "Reward head {Key} ({Kind}) loaded from {Source} in {ElapsedMs} ms")]
    public static partial void RewardHeadLoaded(ILogger logger, string key, string kind, string source, double elapsedMs);

    [LoggerMessage(EventId = EventIds.RewardHeadEvent, Level = LogLevel.Information, Message = "Reward head {Tenant}/{Name}: {Op} v{Version} (current {Current}); cached copy dropped")]
    public static partial void RewardHeadEvent(ILogger logger, string tenant, string name, string op, long version, long current);

    [LoggerMessage(EventId = EventIds.RewardHeadStoreUnavailable, Level = LogLevel.Warning, Message = "Reward head store unreachable: {Reason}")]
    public static partial void RewardHeadStoreUnavailable(ILogger logger, string reason);

    [LoggerMessage(EventId = EventIds.RewardHeadSubscriptionFailed, Level = LogLevel.Warning, Message = "Reward head event subscription failed; cached heads expire after {TtlSeconds} s instead: {Reason}")]
    public static partial void RewardHeadSubscriptionFailed(ILogger logger, double ttlSeconds, string reason);

    [LoggerMessage(EventId = EventIds.RewardHeadRetired, Level = LogLevel.Information, Message = "Reward head {Key} replaced or evicted; its Otter sessions are kept until the node stops ({Retired} retired)")]
    public static partial void RewardHeadRetired(ILogger logger, string key, int retired);

    [LoggerMessage(EventId = EventIds.IgnoredField, Level = LogLevel.Debug, Message = "Request field {Field} accepted and ignored: {Why} (logged once per field)")]
    public static partial void IgnoredField(ILogger logger, string field, string why);

    [LoggerMessage(EventId = EventIds.ToolCallUnparsed, Level = LogLevel.Information, Message = "Request {RequestId}: output in the {Parser} tool-call format did not parse as a call ({Reason}); returned as text")]
    public static partial void ToolCallUnparsed(ILogger logger, string requestId, string parser, string reason);
}
