using Microsoft.Extensions.Options;
using Serving.Contracts.Errors;
using Serving.Contracts.Security;
using Serving.Inference.Node.Hosting;
using Serving.ServiceDefaults;

namespace Serving.Inference.Node.Security;

/// <summary>
/// With <c>Node:GatewayKey</c> set, every request but health and <c>/metrics</c> must carry the key in
/// <see cref="GatewayCredential.Header"/>; without it the node answers 401 <c>gateway_credential_required</c> before any
/// route runs (so a forged <c>X-Serving-Tenant</c> never reaches one). Without the option nothing changes.
/// </summary>
internal static class GatewayCredentialCheck
{
    public static WebApplication UseGatewayCredential(this WebApplication app)
    {
        string? key = app.Services.GetRequiredService<IOptions<NodeOptions>>().Value.GatewayKey;
        if (string.IsNullOrEmpty(key)) return app;
        app.Use(async (context, next) =>
        {
            var path = context.Request.Path;
            bool open = path.StartsWithSegments(HealthEndpoints.LivePath) || path.StartsWithSegments(HealthEndpoints.ReadyPath) || path.StartsWithSegments("/metrics");
            if (!open && !GatewayCredential.Matches(context.Request.Headers[GatewayCredential.Header], key))
                throw new RequestRefusedException(ErrorCodes.GatewayCredentialRequired, "This node serves requests forwarded by the gateway only; send requests to the gateway.");
            await next();
        });
        return app;
    }
}
