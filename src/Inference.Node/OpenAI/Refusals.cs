using Serving.Contracts.Errors;

namespace Serving.Inference.Node.OpenAI;

/// <summary>The node's refusals as rows of <see cref="ErrorCodes"/>; thrown, and written by <see cref="Hosting.NodeExceptionHandler"/>.</summary>
internal static class Refusals
{
    /// <summary>400 naming <paramref name="param"/> (OpenAI's <c>invalid_request_error</c>; no code unless given).</summary>
    public static RequestRefusedException Invalid(string? param, string message, ErrorCode? error = null) =>
        new(error ?? ErrorCodes.InvalidParameter, message, param);

    /// <summary>404 <c>model_not_found</c>: unknown, or not visible to the caller (never 403).</summary>
    public static RequestRefusedException ModelNotFound(string model, string? param = "model") =>
        new(ErrorCodes.ModelNotFound, $"The model '{model}' does not exist or you do not have access to it.", param);

    /// <summary>503 <c>store_unavailable</c> (with Retry-After).</summary>
    public static RequestRefusedException StoreUnavailable(string reason) =>
        new(ErrorCodes.StoreUnavailable, $"The adapter store is unreachable; retry later. ({reason})");

    /// <summary>429 <c>rate_limit_exceeded</c>: the request queue is full (with Retry-After).</summary>
    public static RequestRefusedException QueueFull() =>
        new(ErrorCodes.RequestRateLimited, "The node's request queue is full; retry later.");

    /// <summary>503 <c>draining</c> (with Retry-After).</summary>
    public static RequestRefusedException Draining() =>
        new(ErrorCodes.Draining, "The node is shutting down and accepts no new requests; retry on another node.");
}
