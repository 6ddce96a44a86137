using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Http.HttpResults;
using Serving.AdapterStore.Api;
using Serving.AdapterStore.Storage;
using Serving.Contracts.Errors;
using Serving.Gateway.Api;

namespace Serving.Gateway.Tenancy;

/// <summary>Body of tenant creation.</summary>
/// <param name="Id">Tenant id: lower-case letters, digits, '-', '_' (1–64).</param>
/// <param name="Name">Display name.</param>
public sealed record CreateTenantRequest(string Id, string? Name);

/// <summary>A newly issued key: the secret appears here once and never again.</summary>
public sealed record IssuedKey(
    [property: JsonPropertyName("key")] string Key,
    [property: JsonPropertyName("key_id")] string KeyId,
    [property: JsonPropertyName("tenant")] string Tenant,
    [property: JsonPropertyName("created")] DateTimeOffset Created);

/// <summary>Tenant and key management (<c>/admin</c>), admin keys only.</summary>
public static class AdminApi
{
    /// <summary>Maps the admin endpoints.</summary>
    public static RouteGroupBuilder MapAdminApi(this IEndpointRouteBuilder endpoints)
    {
        var group = endpoints.MapGroup("/admin").WithTags("Admin").RequireAuthorization(TenancyPolicies.Admin);
        group.MapPost("/tenants", CreateTenantAsync).WithName("CreateTenant");
        group.MapGet("/tenants", ListTenantsAsync).WithName("ListTenants");
        group.MapGet("/tenants/{tenant}", GetTenantAsync).WithName("GetTenant");
        group.MapPost("/tenants/{tenant}/keys", CreateKeyAsync).WithName("CreateApiKey");
        group.MapGet("/tenants/{tenant}/keys", ListKeysAsync).WithName("ListApiKeys");
        group.MapDelete("/tenants/{tenant}/keys/{keyId}", RevokeKeyAsync).WithName("RevokeApiKey");
        return group;
    }

    private static ProblemHttpResult Problem(ErrorCode error, string detail) => Problems.Result(GatewayProblems.TypeBase, error.Status, error.Code!, detail);

    internal static async Task<Results<Created<TenantRecord>, ProblemHttpResult>> CreateTenantAsync(CreateTenantRequest body, ApiKeyStore store, CancellationToken cancellationToken)
    {
        if (body.Id is null || !AdapterKeys.IsValidTenant(body.Id))
            return Problem(ErrorCodes.TenantInvalid, "Tenant ids are 1–64 characters of lower-case letters, digits, '-' and '_'.");
        var t = await store.CreateTenantAsync(body.Id, body.Name ?? body.Id, cancellationToken);
        return TypedResults.Created($"/admin/tenants/{t.Id}", t);
    }

    internal static async Task<Ok<IReadOnlyList<TenantRecord>>> ListTenantsAsync(ApiKeyStore store, CancellationToken cancellationToken) =>
        TypedResults.Ok(await store.ListTenantsAsync(cancellationToken));

    internal static async Task<Results<Ok<TenantRecord>, ProblemHttpResult>> GetTenantAsync(string tenant, ApiKeyStore store, CancellationToken cancellationToken) =>
        await store.GetTenantAsync(tenant, cancellationToken) is { } t ? TypedResults.Ok(t) : Problem(ErrorCodes.TenantNotFound, $"No tenant '{tenant}'.");

    internal static async Task<Results<Created<IssuedKey>, ProblemHttpResult>> CreateKeyAsync(string tenant, ApiKeyStore store, CancellationToken cancellationToken)
    {
        if (await store.GetTenantAsync(tenant, cancellationToken) is null) return Problem(ErrorCodes.TenantNotFound, $"No tenant '{tenant}'; create it first.");
        var (secret, record) = await store.CreateKeyAsync(tenant, ApiKeyRoles.Tenant, cancellationToken);
        return TypedResults.Created($"/admin/tenants/{tenant}/keys/{record.KeyId}", new IssuedKey(secret, record.KeyId, tenant, record.Created));
    }

    internal static async Task<Ok<IReadOnlyList<ApiKeyRecord>>> ListKeysAsync(string tenant, ApiKeyStore store, CancellationToken cancellationToken) =>
        TypedResults.Ok(await store.ListKeysAsync(tenant, cancellationToken));

    internal static async Task<Results<NoContent, ProblemHttpResult>> RevokeKeyAsync(string tenant, string keyId, ApiKeyStore store, CancellationToken cancellationToken) =>
        await store.RevokeKeyAsync(tenant, keyId, cancellationToken) ? TypedResults.NoContent() : Problem(ErrorCodes.KeyNotFound, $"No key '{keyId}' for tenant '{tenant}'.");
}
