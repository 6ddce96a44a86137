using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.Routing.Patterns;
using Microsoft.AspNetCore.Routing.Template;
using Serving.Contracts.Errors;

namespace Serving.ServiceDefaults;

/// <summary>
/// What a path under <c>/v1</c> that no endpoint takes answers, on the node and the gateway alike: OpenAI's error JSON
/// (an SDK reports its message instead of "404 status code (no body)"), 405 <c>method_not_allowed</c> with
/// <c>Allow</c> when the route exists for other methods, else 404 <c>unknown_url</c> naming the route.
/// </summary>
public static class UnknownRoutes
{
    /// <summary>The prefix covered.</summary>
    public const string Prefix = "/v1";

    /// <summary>Maps the fallback of <see cref="Prefix"/> (anonymous: it serves nothing).</summary>
    public static IEndpointRouteBuilder MapUnknownV1Routes(this IEndpointRouteBuilder endpoints)
    {
        var sources = endpoints.DataSources;
        endpoints.MapFallback(Prefix + "/{**rest}", context => AnswerAsync(context, sources)).AllowAnonymous().ExcludeFromDescription();
        // The fallback pattern does not match the bare prefix.
        endpoints.Map(Prefix, context => AnswerAsync(context, sources)).AllowAnonymous().ExcludeFromDescription();
        return endpoints;
    }

    private static async Task AnswerAsync(HttpContext context, ICollection<EndpointDataSource> sources)
    {
        var path = context.Request.Path;
        var allowed = AllowedMethods(path, sources);
        var (error, message) = allowed.Count > 0
            ? (ErrorCodes.MethodNotAllowed, $"{context.Request.Method} {path} is not supported; this route takes {string.Join(", ", allowed)}.")
            : (ErrorCodes.UnknownRoute, $"{context.Request.Method} {path} is not supported by this server (it implements /v1/chat/completions, /v1/completions and /v1/models).");
        context.Response.StatusCode = error.Status;
        if (allowed.Count > 0) context.Response.Headers.Allow = string.Join(", ", allowed);
        await context.Response.WriteAsJsonAsync(error.Body(message), context.RequestAborted).ConfigureAwait(false);
    }

    /// <summary>Methods of the endpoints (other than this fallback) whose route pattern matches <paramref name="path"/>.</summary>
    private static List<string> AllowedMethods(PathString path, ICollection<EndpointDataSource> sources)
    {
        var methods = new List<string>();
        foreach (var source in sources)
        {
            foreach (var endpoint in source.Endpoints)
            {
                if (endpoint is not RouteEndpoint route || route.RoutePattern.RawText is not { } raw || raw.StartsWith(Prefix + "/{**rest}", StringComparison.Ordinal)) continue;
                if (endpoint.Metadata.GetMetadata<IHttpMethodMetadata>() is not { } meta || meta.HttpMethods.Count == 0) continue;
                if (!Matches(route.RoutePattern, path)) continue;
                foreach (var m in meta.HttpMethods)
                {
                    if (!methods.Contains(m)) methods.Add(m);
                }
            }
        }
        return methods;
    }

    private static bool Matches(RoutePattern pattern, PathString path)
    {
        try
        {
            var matcher = new TemplateMatcher(TemplateParser.Parse(pattern.RawText!.TrimStart('/')), new RouteValueDictionary());
            return matcher.TryMatch(path, new RouteValueDictionary());
        }
        catch (ArgumentException)
        {
            return false;
        }
    }
}
