namespace Serving.Inference.Node.OpenAI;

/// <summary>A request the node refuses, with the HTTP status and OpenAI's error fields.</summary>
public sealed class OpenAIRequestException(int status, string message, string type, string? param, string? code) : Exception(message)
{
    public int Status { get; } = status;
    public string Type { get; } = type;
    public string? Param { get; } = param;
    public string? Code { get; } = code;

    /// <summary>400 invalid_request_error naming <paramref name="param"/>.</summary>
    public static OpenAIRequestException Invalid(string? param, string message, string? code = null) =>
        new(StatusCodes.Status400BadRequest, message, "invalid_request_error", param, code);
}

/// <summary>Builds OpenAI-shaped error results.</summary>
internal static class OpenAIErrors
{
    public static IResult Result(OpenAIRequestException e, int? retryAfterSeconds = null) =>
        new ErrorResult(e.Status, new OpenAIErrorBody(new OpenAIError(e.Message, e.Type, e.Param, e.Code)), retryAfterSeconds);

    public static IResult ModelNotFound(string model) => Result(new OpenAIRequestException(StatusCodes.Status404NotFound,
        $"The model '{model}' does not exist on this node.", "invalid_request_error", "model", "model_not_found"));

    /// <summary>An adapter refusal: 404 <c>model_not_found</c>, 400 naming the field, 503 with Retry-After when the store is down.</summary>
    public static IResult Adapter(Adapters.AdapterRequestException e, int retryAfter) =>
        Result(new OpenAIRequestException(e.Status, e.Message, e.Status switch
        {
            StatusCodes.Status503ServiceUnavailable => "service_unavailable_error",
            _ => "invalid_request_error",
        }, e.Param, e.Code), e.Status == StatusCodes.Status503ServiceUnavailable ? retryAfter : null);

    public static IResult QueueFull(int retryAfter) => Result(new OpenAIRequestException(StatusCodes.Status429TooManyRequests,
        "The node's request queue is full; retry later.", "rate_limit_error", null, "queue_full"), retryAfter);

    public static IResult Unavailable(int retryAfter) => Result(new OpenAIRequestException(StatusCodes.Status503ServiceUnavailable,
        "The node is shutting down and accepts no new requests; retry on another node.", "service_unavailable_error", null, "draining"), retryAfter);

    /// <summary>JSON error body with a status and an optional Retry-After header.</summary>
    private sealed class ErrorResult(int status, OpenAIErrorBody body, int? retryAfter) : IResult
    {
        public Task ExecuteAsync(HttpContext httpContext)
        {
            if (retryAfter is int s) httpContext.Response.Headers.RetryAfter = s.ToString(System.Globalization.CultureInfo.InvariantCulture);
            return TypedResults.Json(body, statusCode: status).ExecuteAsync(httpContext);
        }
    }
}
