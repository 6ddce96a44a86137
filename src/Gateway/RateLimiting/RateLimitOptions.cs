using System.ComponentModel.DataAnnotations;

namespace Serving.Gateway.RateLimiting;

/// <summary>Per-tenant limits; section <c>Gateway:RateLimits</c>.</summary>
public sealed class RateLimitOptions
{
    /// <summary>Configuration section.</summary>
    public const string SectionName = "Gateway:RateLimits";

    /// <summary>Requests per minute per tenant (token bucket, bursts up to this many).</summary>
    [Range(1, 10_000_000)] public int RequestsPerMinute { get; set; } = 600;

    /// <summary>Tokens per minute per tenant: prompt bytes / 4 + max_tokens × n, charged at admission.</summary>
    [Range(1, 1_000_000_000)] public int TokensPerMinute { get; set; } = 200_000;

    /// <summary>Completion tokens assumed when a request sets no max_tokens.</summary>
    [Range(1, 1_000_000)] public int DefaultMaxTokens { get; set; } = 256;

    /// <summary>Overrides by tenant id.</summary>
    public Dictionary<string, TenantLimits> Tenants { get; set; } = [];

    /// <summary>Requests per minute for a tenant.</summary>
    public int RequestsFor(string tenant) => Tenants.TryGetValue(tenant, out var t) && t.RequestsPerMinute > 0 ? t.RequestsPerMinute : RequestsPerMinute;

    /// <summary>Tokens per minute for a tenant.</summary>
    public int TokensFor(string tenant) => Tenants.TryGetValue(tenant, out var t) && t.TokensPerMinute > 0 ? t.TokensPerMinute : TokensPerMinute;
}

/// <summary>Limits of one tenant (0 = the default).</summary>
public sealed class TenantLimits
{
    /// <summary>Requests per minute.</summary>
    public int RequestsPerMinute { get; set; }

    /// <summary>Tokens per minute.</summary>
    public int TokensPerMinute { get; set; }
}

/// <summary>Names of the rate-limiting policies.</summary>
public static class RateLimitPolicies
{
    /// <summary>Requests per tenant, applied to the OpenAI routes and the adapter API.</summary>
    public const string TenantRequests = "tenant-requests";
}
