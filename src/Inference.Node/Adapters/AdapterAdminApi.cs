using Serving.Contracts.Errors;
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
    public static Task<IResult> PinAsync(string tenant, string name, AdapterManager adapters, HttpContext context) =>
        Run(tenant, name, () => adapters.PinAsync(tenant, name, context.RequestAborted), pinned: true);

    /// <summary>Loads the current version into the host cache (evictable as any other).</summary>
    public static Task<IResult> PrefetchAsync(string tenant, string name, AdapterManager adapters, HttpContext context) =>
        Run(tenant, name, () => adapters.PrefetchAsync(tenant, name, context.RequestAborted), pinned: false);

    /// <summary>Lets the adapter be evicted again: 204, or 404 when it was not pinned.</summary>
    public static IResult Unpin(string tenant, string name, AdapterManager adapters) =>
        adapters.Unpin(tenant, name) ? Results.NoContent()
        : throw new RequestRefusedException(ErrorCodes.NotPinned, $"The adapter '{tenant}/{name}' is not pinned on this node.");

    /// <summary>Runs a load; an absent adapter is 404 and a store failure 503 (thrown to the node's exception handler).</summary>
    private static async Task<IResult> Run(string tenant, string name, Func<Task<HostAdapter?>> action, bool pinned)
    {
        var entry = await action().ConfigureAwait(false) ?? throw Refusals.ModelNotFound($"{tenant}/{name}", null);
        return TypedResults.Ok(new HostAdapterBody(entry.Id!, entry.Key, entry.Version, entry.Bytes, pinned));
    }
}
