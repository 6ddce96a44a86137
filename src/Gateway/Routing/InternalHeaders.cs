using Microsoft.Extensions.Options;
using Yarp.ReverseProxy.Transforms;
using Yarp.ReverseProxy.Transforms.Builder;

namespace Serving.Gateway.Routing;

/// <summary>
/// Keeps the nodes' internal response headers (<c>X-Serving-*</c>) from clients unless
/// <see cref="RoutingOptions.ExposeInternalHeaders"/> is on. The request side is <c>OpenAiRequestMiddleware</c>'s: it drops
/// the <c>X-Serving-*</c> headers a client sends before adding the tenant and the gateway's credential.
/// </summary>
internal static class InternalHeaders
{
    /// <summary>The prefix of every header only the gateway and the nodes speak.</summary>
    public const string Prefix = "X-Serving-";

    /// <summary>Adds the response transform to every route.</summary>
    public static void Hide(TransformBuilderContext context)
    {
        var options = context.Services.GetRequiredService<IOptionsMonitor<RoutingOptions>>();
        context.AddResponseTransform(transform =>
        {
            if (options.CurrentValue.ExposeInternalHeaders) return ValueTask.CompletedTask;
            var headers = transform.HttpContext.Response.Headers;
            List<string>? hidden = null;
            foreach (var name in headers.Keys)
            {
                if (name.StartsWith(Prefix, StringComparison.OrdinalIgnoreCase)) (hidden ??= []).Add(name);
            }
            if (hidden is not null)
            {
                foreach (var name in hidden) headers.Remove(name);
            }
            return ValueTask.CompletedTask;
        });
    }
}
