using Microsoft.Extensions.Options;

namespace Serving.Gateway.Tenancy;

/// <summary>API keys and tenants; section <c>Gateway:Tenancy</c>.</summary>
public sealed class TenancyOptions
{
    /// <summary>Configuration section.</summary>
    public const string SectionName = "Gateway:Tenancy";

    /// <summary>Prefix of the gateway's Redis keys; default <c>gw</c>.</summary>
    public string KeyPrefix { get; set; } = "gw";

    /// <summary>
    /// Keys known from configuration (development, bootstrap admin). Held hashed in memory only; never written to Redis.
    /// </summary>
    public List<StaticApiKey> StaticKeys { get; set; } = [];

    /// <summary>How long a verified key is trusted without asking Redis again (and served stale while Redis is down); default 30 s.</summary>
    public TimeSpan CacheTtl { get; set; } = TimeSpan.FromSeconds(30);
}

/// <summary>An API key from configuration.</summary>
public sealed class StaticApiKey
{
    /// <summary>The secret itself (required).</summary>
    public string Key { get; set; } = "";

    /// <summary>Tenant id (ignored for admin keys).</summary>
    public string Tenant { get; set; } = "";

    /// <summary><c>tenant</c> or <c>admin</c>.</summary>
    public string Role { get; set; } = ApiKeyRoles.Tenant;
}

/// <summary>Checks <see cref="TenancyOptions"/> at start.</summary>
internal sealed class TenancyOptionsValidator : IValidateOptions<TenancyOptions>
{
    public ValidateOptionsResult Validate(string? name, TenancyOptions o)
    {
        var errors = new List<string>();
        const string S = TenancyOptions.SectionName;
        if (string.IsNullOrWhiteSpace(o.KeyPrefix) || o.KeyPrefix.IndexOfAny(['{', '}']) >= 0) errors.Add($"{S}:KeyPrefix must be non-empty and without braces.");
        if (o.CacheTtl < TimeSpan.Zero) errors.Add($"{S}:CacheTtl must not be negative.");
        for (var i = 0; i < o.StaticKeys.Count; i++)
        {
            var k = o.StaticKeys[i];
            if (string.IsNullOrWhiteSpace(k.Key)) errors.Add($"{S}:StaticKeys:{i}:Key is required.");
            if (k.Role is not (ApiKeyRoles.Tenant or ApiKeyRoles.Admin)) errors.Add($"{S}:StaticKeys:{i}:Role must be '{ApiKeyRoles.Tenant}' or '{ApiKeyRoles.Admin}'.");
            else if (k.Role == ApiKeyRoles.Tenant && !Serving.AdapterStore.Storage.AdapterKeys.IsValidTenant(k.Tenant))
                errors.Add($"{S}:StaticKeys:{i}:Tenant must be a tenant id (1–64 of a-z, 0-9, '-', '_').");
        }
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}

/// <summary>Roles of an API key.</summary>
public static class ApiKeyRoles
{
    /// <summary>Uses the OpenAI routes and its own adapters.</summary>
    public const string Tenant = "tenant";

    /// <summary>Manages tenants and keys; cannot call the model.</summary>
    public const string Admin = "admin";
}

/// <summary>Authorization policy and claim names.</summary>
public static class TenancyPolicies
{
    /// <summary>Authentication scheme name.</summary>
    public const string Scheme = "ApiKey";

    /// <summary>Policy: a tenant key.</summary>
    public const string Tenant = "tenant";

    /// <summary>Policy: an admin key.</summary>
    public const string Admin = "admin";

    /// <summary>Claim holding the tenant id.</summary>
    public const string TenantClaim = "tenant";

    /// <summary>Claim holding the key id (never the key).</summary>
    public const string KeyIdClaim = "key_id";
}
