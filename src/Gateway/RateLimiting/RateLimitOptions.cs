using Microsoft.Extensions.Options;

namespace Serving.Gateway.RateLimiting;

/// <summary>Per-tenant limits; section <c>Gateway:RateLimits</c>.</summary>
public sealed class RateLimitOptions
{
    /// <summary>Configuration section.</summary>
    public const string SectionName = "Gateway:RateLimits";

    /// <summary>Requests per minute per tenant (token bucket, bursts up to this many); 1–10 000 000, default 600.</summary>
    public int RequestsPerMinute { get; set; } = 600;

    /// <summary>
    /// Tokens per minute per tenant (the bucket's size and refill rate): each request reserves prompt bytes / 4 +
    /// n × max_tokens (clamped to the model's context) and is settled at its usage, prompt once + every generated token
    /// (<see cref="TokenBudget"/>); 1–10⁹, default 200 000.
    /// </summary>
    public int TokensPerMinute { get; set; } = 200_000;

    /// <summary>Completion tokens reserved per choice when a request sets no max_tokens; 1–1 000 000, default 256.</summary>
    public int DefaultMaxTokens { get; set; } = 256;

    /// <summary>Overrides by tenant id.</summary>
    public Dictionary<string, TenantLimits> Tenants { get; set; } = [];

    /// <summary>Requests per minute for a tenant.</summary>
    public int RequestsFor(string tenant) => Tenants.TryGetValue(tenant, out var t) && t.RequestsPerMinute > 0 ? t.RequestsPerMinute : RequestsPerMinute;

    /// <summary>Tokens per minute for a tenant.</summary>
    public int TokensFor(string tenant) => Tenants.TryGetValue(tenant, out var t) && t.TokensPerMinute > 0 ? t.TokensPerMinute : TokensPerMinute;
}

/// <summary>Checks <see cref="RateLimitOptions"/> at start.</summary>
internal sealed class RateLimitOptionsValidator : IValidateOptions<RateLimitOptions>
{
    public ValidateOptionsResult Validate(string? name, RateLimitOptions o)
    {
        var errors = new List<string>();
        const string S = RateLimitOptions.SectionName;
        if (o.RequestsPerMinute is < 1 or > 10_000_000) errors.Add($"{S}:RequestsPerMinute must be in [1, 10000000].");
        if (o.TokensPerMinute is < 1 or > 1_000_000_000) errors.Add($"{S}:TokensPerMinute must be in [1, 1000000000].");
        if (o.DefaultMaxTokens is < 1 or > 1_000_000) errors.Add($"{S}:DefaultMaxTokens must be in [1, 1000000].");
        foreach (var (tenant, t) in o.Tenants)
        {
            if (t.RequestsPerMinute < 0 || t.TokensPerMinute < 0) errors.Add($"{S}:Tenants:{tenant} limits must not be negative (0 = the default).");
        }
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
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
