using System.Text.Json.Serialization;

namespace Serving.Gateway.Api;

/// <summary>OpenAI's error JSON: <c>{"error": {"message", "type", "param", "code"}}</c>.</summary>
public sealed record OpenAiError(
    [property: JsonPropertyName("message")] string Message,
    [property: JsonPropertyName("type")] string Type,
    [property: JsonPropertyName("param")] string? Param,
    [property: JsonPropertyName("code")] string? Code);

/// <summary>Envelope of <see cref="OpenAiError"/>.</summary>
public sealed record OpenAiErrorBody([property: JsonPropertyName("error")] OpenAiError Error);

/// <summary>Writes OpenAI-shaped errors on the OpenAI routes and ProblemDetails elsewhere.</summary>
public static class OpenAiErrors
{
    /// <summary>True for paths whose clients expect OpenAI's error shape (the proxied routes and <c>/v1/models</c>).</summary>
    public static bool IsOpenAiPath(PathString path) =>
        path.StartsWithSegments("/v1/chat") || path.StartsWithSegments("/v1/completions") || path.StartsWithSegments("/v1/models");

    /// <summary>OpenAI error type for a status code.</summary>
    public static string TypeFor(int status) => status switch
    {
        401 => "invalid_request_error",
        403 => "permission_error",
        404 => "invalid_request_error",
        413 => "invalid_request_error",
        429 => "rate_limit_exceeded",
        >= 500 => "server_error",
        _ => "invalid_request_error",
    };

    /// <summary>Writes the error with the right shape for the path; no-op when the response has started.</summary>
    public static async Task WriteAsync(HttpContext context, int status, string code, string message, string? param = null)
    {
        if (context.Response.HasStarted) return;
        context.Response.StatusCode = status;
        if (IsOpenAiPath(context.Request.Path))
        {
            await context.Response.WriteAsJsonAsync(new OpenAiErrorBody(new OpenAiError(message, TypeFor(status), param, code)), context.RequestAborted);
            return;
        }
        var problems = context.RequestServices.GetRequiredService<IProblemDetailsService>();
        await problems.WriteAsync(new ProblemDetailsContext
        {
            HttpContext = context,
            ProblemDetails =
            {
                Status = status, Type = GatewayProblems.TypeBase + code, Title = code.Replace('_', ' '), Detail = message,
                Extensions = { ["code"] = code },
            },
        });
    }
}

/// <summary>ProblemDetails type URIs of the gateway.</summary>
public static class GatewayProblems
{
    /// <summary>Base of <c>type</c>; the code is appended.</summary>
    public const string TypeBase = "https://serving.local/problems/gateway/";
}
