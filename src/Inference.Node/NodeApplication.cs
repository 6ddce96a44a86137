using Serving.Inference.Node.Adapters;
using Serving.Inference.Node.Hosting;
using Serving.Inference.Node.OpenAI;
using Serving.Inference.Node.Registry;
using Serving.Inference.Node.Status;
using Serving.ServiceDefaults;

namespace Serving.Inference.Node;

/// <summary>
/// The node's whole composition, used by Program.cs and by hosts that embed a node (<c>src/Standalone</c>), so that a
/// service or endpoint added here reaches every host.
/// </summary>
public static class NodeApplication
{
    /// <summary>Defaults (Serilog, options, metrics, health, registry heartbeats) and the model services.</summary>
    public static WebApplicationBuilder AddNode(this WebApplicationBuilder builder)
    {
        builder.AddNodeDefaults();
        builder.Services.AddInferenceNode();
        return builder;
    }

    /// <summary>
    /// Health, metrics, the OpenAI routes, <c>/node/status</c> and the adapter pin/prefetch routes; responses carry
    /// <c>X-Request-Id</c>, and <c>X-Serving-Node</c> once the node has joined a registry.
    /// </summary>
    public static WebApplication MapNode(this WebApplication app)
    {
        app.UseRequestIds(); // first: every response carries X-Request-Id, and the node's log lines of the request its id
        app.UseNodeIdentityHeader();
        app.MapNodeDefaults();
        app.MapOpenAIApi();
        app.MapNodeStatusApi();
        app.MapAdapterAdminApi();
        app.MapUnknownV1Routes(); // any other /v1 route or method: OpenAI's error JSON naming it
        return app;
    }
}
