using Microsoft.Extensions.Options;
using Serving.Contracts.Security;
using Yarp.ReverseProxy.Transforms;
using Yarp.ReverseProxy.Transforms.Builder;

namespace Serving.Gateway.Routing;

/// <summary>
/// Keeps the headers only the gateway and the nodes speak from clients' responses unless
/// <see cref="RoutingOptions.ExposeInternalHeaders"/> is on: <c>X-Serving-Node</c> (which node served: the cluster's
/// layout) and, should a node ever echo them, the tenant and credential headers. The headers that describe the
/// caller's own request (<c>X-Serving-Adapter</c>, <c>X-Serving-Reward-Head</c>: the adapter and head versions it ran
/// with) pass. The request side is <c>OpenAiRequestMiddleware</c>'s: it drops every <c>X-Serving-*</c> header a client
/// sends before adding the tenant and the credential.
/// </summary>
internal static class InternalHeaders
{
    /// <summary>The response headers hidden by default.</summary>
    public static readonly string[] Names = ["X-Serving-Node", "X-Serving-Tenant", GatewayCredential.Header];

    /// <summary>Adds the response transform to every route.</summary>
    public static void Hide(TransformBuilderContext context)
    {
        var options = context.Services.GetRequiredService<IOptionsMonitor<RoutingOptions>>();
        context.AddResponseTransform(transform =>
        {
            if (options.CurrentValue.ExposeInternalHeaders) return ValueTask.CompletedTask;
            var headers = transform.HttpContext.Response.Headers;
            foreach (var name in Names) headers.Remove(name);
            return ValueTask.CompletedTask;
        });
    }
}
