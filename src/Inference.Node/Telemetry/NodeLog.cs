namespace Serving.Inference.Node.Telemetry;

/// <summary>The node's log messages (stable event ids; no prompt or output text is ever logged).</summary>
internal static partial class NodeLog
{
    [LoggerMessage(EventId = 1000, Level = LogLevel.Information,
        Message = "Loaded model {ModelId} ({Architecture}) with {Slots} KV slots of {MaxContext} tokens in {ElapsedMs} ms; default chat template: {DefaultTemplate}")]
    public static partial void ModelLoaded(ILogger logger, string modelId, string architecture, int slots, int maxContext, long elapsedMs, bool defaultTemplate);

    [LoggerMessage(EventId = 1001, Level = LogLevel.Information, Message = "Request {RequestId} started: {PromptTokens} prompt tokens, {Choices} choices, queued {QueuedMs} ms")]
    public static partial void RequestStarted(ILogger logger, string? requestId, int promptTokens, int choices, long queuedMs);

    [LoggerMessage(EventId = 1002, Level = LogLevel.Information, Message = "Request {RequestId} finished ({FinishReason}) after {CompletionTokens} tokens")]
    public static partial void RequestFinished(ILogger logger, string? requestId, string finishReason, int completionTokens);

    [LoggerMessage(EventId = 1003, Level = LogLevel.Warning, Message = "Request {RequestId} refused: {Reason}")]
    public static partial void RequestRefused(ILogger logger, string requestId, string reason);

    [LoggerMessage(EventId = 1004, Level = LogLevel.Information, Message = "Client disconnected; request {RequestId} cancelled")]
    public static partial void ClientDisconnected(ILogger logger, string requestId);

    [LoggerMessage(EventId = 1005, Level = LogLevel.Error, Message = "A scheduler iteration failed; running requests were ended")]
    public static partial void StepFailed(ILogger logger, Exception error);

    [LoggerMessage(EventId = 1006, Level = LogLevel.Information, Message = "Draining: {Running} running and {Waiting} waiting requests")]
    public static partial void Draining(ILogger logger, int running, int waiting);

    [LoggerMessage(EventId = 1007, Level = LogLevel.Information, Message = "Scheduler stopped")]
    public static partial void Stopped(ILogger logger);

    [LoggerMessage(EventId = 1008, Level = LogLevel.Information, Message = "Invalid request {RequestId}: {Param}")]
    public static partial void InvalidRequest(ILogger logger, string requestId, string? param);
}
