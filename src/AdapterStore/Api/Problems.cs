using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;

namespace Serving.AdapterStore.Api;

/// <summary>
/// RFC 7807 problems as every non-OpenAI route answers them (the adapter API, the gateway's admin API and exception
/// handler): <c>type</c> = a base URI + the stable code, <c>title</c>, <c>detail</c> a sentence the caller can act on,
/// and the code again as the <c>code</c> extension.
/// </summary>
public static class Problems
{
    /// <summary>The problem object.</summary>
    /// <param name="typeBase">Base of the <c>type</c> URI; the code is appended.</param>
    /// <param name="status">HTTP status.</param>
    /// <param name="code">Stable error code.</param>
    /// <param name="detail">What went wrong and what to do.</param>
    /// <param name="title">Short title; default the code with spaces.</param>
    /// <param name="extensions">More members besides <c>code</c> (e.g. the tensor at fault).</param>
    public static ProblemDetails Details(string typeBase, int status, string code, string detail, string? title = null,
        IEnumerable<KeyValuePair<string, object?>>? extensions = null)
    {
        var problem = new ProblemDetails { Type = typeBase + code, Status = status, Title = title ?? code.Replace('_', ' '), Detail = detail };
        problem.Extensions["code"] = code;
        foreach (var (key, value) in extensions ?? []) problem.Extensions[key] = value;
        return problem;
    }

    /// <summary>The problem as an endpoint result.</summary>
    public static ProblemHttpResult Result(string typeBase, int status, string code, string detail, string? title = null,
        IEnumerable<KeyValuePair<string, object?>>? extensions = null) =>
        TypedResults.Problem(Details(typeBase, status, code, detail, title, extensions));
}
