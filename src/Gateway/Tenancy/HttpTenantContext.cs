using Serving.AdapterStore.Api;

namespace Serving.Gateway.Tenancy;

/// <summary>The adapter store's tenant, taken from the authenticated API key.</summary>
internal sealed class HttpTenantContext(IHttpContextAccessor accessor) : ITenantContext
{
    public string TenantId =>
        accessor.HttpContext?.User.FindFirst(TenancyPolicies.TenantClaim)?.Value
        ?? throw new InvalidOperationException("No tenant on this request; the endpoint must require the tenant policy.");
}
