using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;
using Serving.AdapterStore.Api;
using Serving.AdapterStore.Storage;
using Serving.Contracts.Errors;
using Serving.Gateway.Api;
using Serving.Gateway.Tenancy;

namespace Serving.Gateway.RateLimiting;

/// <summary>A tenant's token budget now and its usage over the last minute and hour (this gateway process).</summary>
/// <param name="Tenant">Tenant id.</param>
/// <param name="TokensPerMinute">Its budget: the bucket's size and refill per minute.</param>
/// <param name="AvailableTokens">Tokens it may reserve now (negative while paying off a debt).</param>
/// <param name="ReservedTokens">Tokens held by its requests in flight.</param>
/// <param name="LastMinute">Settled in the last 60 s.</param>
/// <param name="LastHour">Settled in the last 60 min.</param>
public sealed record TenantUsageResponse(
    [property: JsonPropertyName("tenant")] string Tenant,
    [property: JsonPropertyName("tokens_per_minute")] int TokensPerMinute,
    [property: JsonPropertyName("available_tokens")] long AvailableTokens,
    [property: JsonPropertyName("reserved_tokens")] long ReservedTokens,
    [property: JsonPropertyName("last_minute")] UsageTotals LastMinute,
    [property: JsonPropertyName("last_hour")] UsageTotals LastHour);

/// <summary><c>GET /admin/tenants/{tenant}/usage</c> (admin keys, like the rest of <c>/admin</c>).</summary>
public static class TenantUsageApi
{
    /// <summary>Maps the usage read-out into the admin group.</summary>
    public static RouteGroupBuilder MapTenantUsageApi(this RouteGroupBuilder admin)
    {
        admin.MapGet("/tenants/{tenant}/usage", GetUsageAsync).WithName("GetTenantUsage");
        return admin;
    }

    private static readonly UsageTotals None = new(0, 0, 0, 0);

    internal static async Task<Results<Ok<TenantUsageResponse>, ProblemHttpResult>> GetUsageAsync(string tenant, TokenBudget budget, TenantUsage usage,
        ApiKeyStore store, IOptions<TenancyOptions> tenancy, CancellationToken cancellationToken)
    {
        if (!AdapterKeys.IsValidTenant(tenant))
        {
            return Problem(ErrorCodes.TenantInvalid, "Tenant ids are 1–64 characters of lower-case letters, digits, '-' and '_'.");
        }
        var recent = usage.Read(tenant);
        bool known = recent is not null
            || tenancy.Value.StaticKeys.Any(k => k.Tenant == tenant && k.Role != ApiKeyRoles.Admin)
            || await store.GetTenantAsync(tenant, cancellationToken) is not null;
        if (!known) return Problem(ErrorCodes.TenantNotFound, $"No tenant '{tenant}'.");
        var (available, reserved, limit) = budget.Read(tenant);
        return TypedResults.Ok(new TenantUsageResponse(tenant, limit, available, reserved, recent?.LastMinute ?? None, recent?.LastHour ?? None));
    }

    private static ProblemHttpResult Problem(ErrorCode error, string detail) => Problems.Result(GatewayProblems.TypeBase, error.Status, error.Code!, detail);
}
