namespace Serving.Inference.Node.Registry;

/// <summary>
/// This node's registry id once it has joined (<see cref="NodeHeartbeats"/> sets it when Kestrel listens; null without
/// <c>Node:Redis</c>). Every response then carries it as <see cref="Header"/>, so a client behind the gateway (and the
/// routing tests) can tell which node served a request.
/// </summary>
public sealed class NodeIdentity
{
    /// <summary>Response header naming the node that answered.</summary>
    public const string Header = "X-Serving-Node";

    private volatile string? _id;

    /// <summary>The registry id, null until the node joins (or when it publishes no heartbeats).</summary>
    public string? Id
    {
        get => _id;
        internal set => _id = value;
    }
}

/// <summary>The <see cref="NodeIdentity.Header"/> response header.</summary>
public static class NodeIdentityExtensions
{
    /// <summary>Adds <c>X-Serving-Node</c> to every response once the node has an id.</summary>
    public static WebApplication UseNodeIdentityHeader(this WebApplication app)
    {
        if (app.Services.GetService<NodeIdentity>() is not { } identity) return app;
        app.Use((context, next) =>
        {
            // At the start of the response, so that an error written by the exception handler (which clears headers) has it too.
            context.Response.OnStarting(() =>
            {
                if (identity.Id is { } id) context.Response.Headers[NodeIdentity.Header] = id;
                return Task.CompletedTask;
            });
            return next(context);
        });
        return app;
    }
}
