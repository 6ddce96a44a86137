using Microsoft.Extensions.Options;
using Serving.Inference.Node.Hosting;
using Serving.Inference.Node.OpenAI;

namespace Serving.Inference.Node.Adapters;

/// <summary>A host-cache entry as the pin and prefetch endpoints report it.</summary>
public sealed record HostAdapterBody(string Id, string Key, long Version, long Bytes, bool Pinned);

/// <summary>
/// Operator endpoints of the host tier (the node is not public; the gateway does not route <c>/node</c>):
/// <c>POST /node/adapters/{tenant}/{name}/pin</c>, <c>DELETE .../pin</c>, <c>POST .../prefetch</c>.
/// </summary>
public static class AdapterAdminApi
{
    /// <summary>Maps the routes.</summary>
    public static IEndpointRouteBuilder MapAdapterAdminApi(this IEndpointRouteBuilder app)
    {
        var g = app.MapGroup("/node/adapters/{tenant}/{name}");
        g.MapPost("/pin", PinAsync);
        g.MapDelete("/pin", Unpin);
        g.MapPost("/prefetch", PrefetchAsync);
        return app;
    }

    /// <summary>Loads the current version into the host cache and keeps it (and later versions) there.</summary>
    public static Task<IResult> PinAsync(string tenant, string name, AdapterManager adapters, IOptions<NodeOptions> options, HttpContext context) =>
        Run(tenant, name, options.Value, () => adapters.PinAsync(tenant, name, context.RequestAborted), pinned: true);

    /// <summary>Loads the current version into the host cache (evictable as any other).</summary>
    public static Task<IResult> PrefetchAsync(string tenant, string name, AdapterManager adapters, IOptions<NodeOptions> options, HttpContext context) =>
        Run(tenant, name, options.Value, () => adapters.PrefetchAsync(tenant, name, context.RequestAborted), pinned: false);

    /// <summary>Lets the adapter be evicted again: 204, or 404 when it was not pinned.</summary>
    public static IResult Unpin(string tenant, string name, AdapterManager adapters) =>
        adapters.Unpin(tenant, name) ? Results.NoContent() : OpenAIErrors.Result(new OpenAIRequestException(StatusCodes.Status404NotFound,
            $"The adapter '{tenant}/{name}' is not pinned on this node.", "invalid_request_error", null, "not_pinned"));

    private static async Task<IResult> Run(string tenant, string name, NodeOptions options, Func<Task<HostAdapter?>> action, bool pinned)
    {
        try
        {
            var entry = await action().ConfigureAwait(false);
            return entry is null
                ? OpenAIErrors.Adapter(AdapterRequestException.NotFound($"{tenant}/{name}", null), options.RetryAfterSeconds)
                : TypedResults.Ok(new HostAdapterBody(entry.Id!, entry.Key, entry.Version, entry.Bytes, pinned));
        }
        catch (AdapterRequestException e)
        {
            return OpenAIErrors.Adapter(e, options.RetryAfterSeconds);
        }
    }
}
