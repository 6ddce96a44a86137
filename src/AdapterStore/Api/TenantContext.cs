namespace Serving.AdapterStore.Api;

/// <summary>The tenant of the current request; the gateway fills it from the API key.</summary>
public interface ITenantContext
{
    /// <summary>Tenant id (see <see cref="Storage.AdapterKeys.IsValidTenant"/>).</summary>
    string TenantId { get; }
}

/// <summary>Default for single-user setups: every request belongs to one tenant.</summary>
public sealed class SingleTenantContext(string tenantId = SingleTenantContext.DefaultTenant) : ITenantContext
{
    /// <summary>The tenant id used when nothing else is configured.</summary>
    public const string DefaultTenant = "default";

    /// <inheritdoc />
    public string TenantId { get; } = tenantId;
}
