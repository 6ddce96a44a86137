using System.Collections.Concurrent;
using System.Threading.RateLimiting;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Serving.Contracts.Errors;
using Serving.Gateway.Api;
using Serving.Gateway.Tenancy;

namespace Serving.Gateway.RateLimiting;

/// <summary>Request and token budgets per tenant (ASP.NET Core rate limiting; 429 with <c>Retry-After</c>).</summary>
public static class TenantRateLimits
{
    /// <summary>A token bucket that refills <paramref name="perMinute"/> permits a minute in small steps.</summary>
    public static TokenBucketRateLimiterOptions Bucket(int perMinute) => perMinute >= 60
        ? new() { TokenLimit = perMinute, TokensPerPeriod = Math.Max(1, perMinute / 60), ReplenishmentPeriod = TimeSpan.FromSeconds(1), QueueLimit = 0, AutoReplenishment = true }
        : new() { TokenLimit = perMinute, TokensPerPeriod = 1, ReplenishmentPeriod = TimeSpan.FromMinutes(1) / perMinute, QueueLimit = 0, AutoReplenishment = true };

    /// <summary>Registers the request policy and the token budget.</summary>
    public static IServiceCollection AddTenantRateLimits(this IServiceCollection services)
    {
        services.TryAddSingleton<TokenBudget>();
        services.AddRateLimiter(o =>
        {
            o.AddPolicy(RateLimitPolicies.TenantRequests, context =>
            {
                string tenant = context.User.FindFirst(TenancyPolicies.TenantClaim)?.Value ?? "";
                var limits = context.RequestServices.GetRequiredService<IOptionsMonitor<RateLimitOptions>>().CurrentValue;
                return RateLimitPartition.GetTokenBucketLimiter(tenant, t => Bucket(limits.RequestsFor(t)));
            });
            o.OnRejected = async (ctx, ct) =>
            {
                var retry = ctx.Lease.TryGetMetadata(MetadataName.RetryAfter, out var after) ? after : TimeSpan.FromSeconds(1);
                await WriteTooManyAsync(ctx.HttpContext, retry, ErrorCodes.RequestRateLimited, "requests");
            };
        });
        return services;
    }

    /// <summary>Writes 429 (<paramref name="error"/>: requests or tokens) with <c>Retry-After</c> (whole seconds, at least 1).</summary>
    public static Task WriteTooManyAsync(HttpContext context, TimeSpan retryAfter, ErrorCode error, string what)
    {
        int seconds = Math.Max(1, (int)Math.Ceiling(retryAfter.TotalSeconds));
        return OpenAiErrors.WriteAsync(context, error, $"Rate limit of {what} per minute reached for your tenant; retry after {seconds} s.",
            retryAfter: TimeSpan.FromSeconds(seconds));
    }
}

/// <summary>Tokens per minute per tenant, charged at admission from the request's prompt size and max_tokens.</summary>
public sealed class TokenBudget(IOptionsMonitor<RateLimitOptions> options)
{
    private readonly ConcurrentDictionary<string, TokenBucketRateLimiter> _buckets = new(StringComparer.Ordinal);

    /// <summary>Estimated cost of a request: prompt bytes / 4 (rounded up) + max_tokens × n.</summary>
    public static int Estimate(long promptBytes, int maxTokens, int n) =>
        (int)Math.Min(int.MaxValue, (promptBytes + 3) / 4 + (long)maxTokens * Math.Max(1, n));

    /// <summary>Takes <paramref name="tokens"/> from the tenant's budget; when refused, how long to wait.</summary>
    public (bool Ok, TimeSpan RetryAfter) TryTake(string tenant, int tokens)
    {
        var bucket = _buckets.GetOrAdd(tenant, t => new TokenBucketRateLimiter(TenantRateLimits.Bucket(options.CurrentValue.TokensFor(t))));
        int limit = options.CurrentValue.TokensFor(tenant);
        using var lease = bucket.AttemptAcquire(Math.Clamp(tokens, 1, limit));
        if (lease.IsAcquired) return (true, TimeSpan.Zero);
        return (false, lease.TryGetMetadata(MetadataName.RetryAfter, out var after) ? after : TimeSpan.FromSeconds(1));
    }
}
