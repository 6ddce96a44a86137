using System.Globalization;
using Serving.AdapterStore.Api;
using Serving.Contracts.Errors;

namespace Serving.Gateway.Api;

/// <summary>Writes the gateway's refusals: OpenAI's error JSON on the OpenAI routes, ProblemDetails elsewhere (rows of <see cref="ErrorCodes"/>).</summary>
public static class OpenAiErrors
{
    /// <summary>True for paths whose clients expect OpenAI's error shape (the proxied routes and <c>/v1/models</c>).</summary>
    public static bool IsOpenAiPath(PathString path) =>
        path.StartsWithSegments("/v1/chat") || path.StartsWithSegments("/v1/completions") || path.StartsWithSegments("/v1/models")
        || path.StartsWithSegments("/tokenize") || path.StartsWithSegments("/detokenize"); // vLLM's tokenizer routes answer as the OpenAI ones

    /// <summary>
    /// Writes <paramref name="error"/> with the right shape for the path, and <c>Retry-After</c> (whole seconds, at
    /// least 1) when given; no-op when the response has started.
    /// </summary>
    public static async Task WriteAsync(HttpContext context, ErrorCode error, string message, string? param = null, TimeSpan? retryAfter = null)
    {
        if (context.Response.HasStarted) return;
        context.Response.StatusCode = error.Status;
        if (retryAfter is { } after)
        {
            context.Response.Headers.RetryAfter = Math.Max(1, (int)Math.Ceiling(after.TotalSeconds)).ToString(CultureInfo.InvariantCulture);
        }
        if (IsOpenAiPath(context.Request.Path))
        {
            await context.Response.WriteAsJsonAsync(error.Body(message, param), context.RequestAborted);
            return;
        }
        var problems = context.RequestServices.GetRequiredService<IProblemDetailsService>();
        await problems.WriteAsync(new ProblemDetailsContext
        {
            HttpContext = context,
            ProblemDetails = Problems.Details(GatewayProblems.TypeBase, error.Status, error.Code ?? "invalid_request", message),
        });
    }
}

/// <summary>ProblemDetails type URIs of the gateway.</summary>
public static class GatewayProblems
{
    /// <summary>Base of <c>type</c>; the code is appended.</summary>
    public const string TypeBase = "https://serving.local/problems/gateway/";
}
