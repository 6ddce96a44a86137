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

/// <summary>
/// Tokens per minute per tenant, charged at admission from the request's prompt size and max_tokens × n, and settled
/// upward when the node reports generating more than that (<c>usage.generated_tokens</c>: alignment candidates, beams).
/// Nothing is refunded (a request that generated less, was refused or cancelled keeps its admission charge: issue 22).
/// </summary>
public sealed class TokenBudget(IOptionsMonitor<RateLimitOptions> options)
{
    private readonly ConcurrentDictionary<string, TokenBucketRateLimiter> _buckets = new(StringComparer.Ordinal);

    /// <summary>Estimated cost of a request: prompt bytes / 4 (rounded up) + max_tokens × n.</summary>
    public static int Estimate(long promptBytes, int maxTokens, int n) =>
        (int)Math.Min(int.MaxValue, (promptBytes + 3) / 4 + (long)maxTokens * Math.Max(1, n));

    /// <summary>Takes <paramref name="tokens"/> from the tenant's budget; when refused, how long to wait.</summary>
    public (bool Ok, TimeSpan RetryAfter) TryTake(string tenant, int tokens)
    {
        int limit = options.CurrentValue.TokensFor(tenant);
        using var lease = Bucket(tenant).AttemptAcquire(Math.Clamp(tokens, 1, limit));
        if (lease.IsAcquired) return (true, TimeSpan.Zero);
        return (false, lease.TryGetMetadata(MetadataName.RetryAfter, out var after) ? after : TimeSpan.FromSeconds(1));
    }

    /// <summary>
    /// Settles a finished request: when the node generated more tokens (<paramref name="generated"/>) than the admission
    /// charge assumed for the output (<paramref name="reserved"/> = max_tokens × n), the difference is taken from the
    /// tenant's budget, as far as it holds tokens (the limiter keeps no debt, so one request can overdraw the budget by at
    /// most its own excess). Returns the tokens taken.
    /// </summary>
    public int Settle(string tenant, long reserved, long generated)
    {
        long excess = generated - reserved;
        if (excess <= 0) return 0;
        var bucket = Bucket(tenant);
        int take = (int)Math.Min(Math.Min(excess, bucket.GetStatistics()?.CurrentAvailablePermits ?? 0), options.CurrentValue.TokensFor(tenant));
        if (take <= 0) return 0;
        using var lease = bucket.AttemptAcquire(take);
        return lease.IsAcquired ? take : 0;
    }

    /// <summary>Tokens the tenant may still spend now (for tests and diagnostics).</summary>
    public long Available(string tenant) => Bucket(tenant).GetStatistics()?.CurrentAvailablePermits ?? 0;

    private TokenBucketRateLimiter Bucket(string tenant) =>
        _buckets.GetOrAdd(tenant, t => new TokenBucketRateLimiter(TenantRateLimits.Bucket(options.CurrentValue.TokensFor(t))));
}
