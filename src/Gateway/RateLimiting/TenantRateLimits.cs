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

    /// <summary>Registers the request policy, the token budget (and its clock) and the per-tenant usage record.</summary>
    public static IServiceCollection AddTenantRateLimits(this IServiceCollection services)
    {
        services.TryAddKeyedSingleton<TimeProvider>(TokenBudget.ClockKey, (sp, _) => sp.GetRequiredService<TimeProvider>());
        services.TryAddSingleton<TokenBudget>();
        services.TryAddSingleton<TenantUsage>();
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
