using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Http.HttpResults;
using Serving.AdapterStore.Storage;
using Serving.Contracts.Errors;
using Serving.Contracts.Models;
using Serving.Gateway.Routing;
using Serving.Gateway.Tenancy;

namespace Serving.Gateway.Api;

/// <summary>One entry of <c>/v1/models</c> (OpenAI's model object).</summary>
public sealed record ModelEntry(
    [property: JsonPropertyName("id")] string Id,
    [property: JsonPropertyName("object")] string Object,
    [property: JsonPropertyName("created")] long Created,
    [property: JsonPropertyName("owned_by")] string OwnedBy);

/// <summary>OpenAI's list envelope.</summary>
public sealed record ModelList(
    [property: JsonPropertyName("object")] string Object,
    [property: JsonPropertyName("data")] IReadOnlyList<ModelEntry> Data);

/// <summary><c>/v1/models</c>: the base models the fleet serves, the caller's adapters and the public ones.</summary>
public static class ModelsApi
{
    /// <summary>Maps list and get.</summary>
    public static RouteGroupBuilder MapModelsApi(this IEndpointRouteBuilder endpoints)
    {
        var group = endpoints.MapGroup("/v1/models").WithTags("Models").RequireAuthorization(TenancyPolicies.Tenant);
        group.MapGet("/", ListAsync).WithName("ListModels");
        group.MapGet("/{**id}", GetAsync).WithName("GetModel");
        return group;
    }

    internal static async Task<Ok<ModelList>> ListAsync(HttpContext context, INodeView view, IAdapterStore store, CancellationToken cancellationToken) =>
        TypedResults.Ok(new ModelList("list", await VisibleAsync(context, view, store, cancellationToken)));

    internal static async Task<Results<Ok<ModelEntry>, JsonHttpResult<OpenAIErrorBody>>> GetAsync(string id, HttpContext context, INodeView view, IAdapterStore store, CancellationToken cancellationToken)
    {
        // SDKs percent-encode the '/' of an adapter id (base:tenant%2Fname); the catch-all keeps %2F encoded.
        id = Uri.UnescapeDataString(id);
        var all = await VisibleAsync(context, view, store, cancellationToken);
        // The caller's own adapters are listed as base:name; base:tenant/name (the canonical id the node answers with) names them too.
        string tenant = context.User.FindFirst(TenancyPolicies.TenantClaim)!.Value;
        var own = ModelId.TryParse(id, out var parsed) && parsed.Tenant == tenant && parsed.Adapter is not null
            ? new ModelId(parsed.BaseModel, null, parsed.Adapter).ToString()
            : null;
        return all.FirstOrDefault(m => m.Id == id || m.Id == own) is { } m
            ? TypedResults.Ok(m)
            : TypedResults.Json(ErrorCodes.ModelNotFound.Body($"The model '{id}' does not exist or you do not have access to it.", "model"), statusCode: ErrorCodes.ModelNotFound.Status);
    }

    private static async Task<IReadOnlyList<ModelEntry>> VisibleAsync(HttpContext context, INodeView view, IAdapterStore store, CancellationToken cancellationToken)
    {
        string tenant = context.User.FindFirst(TenancyPolicies.TenantClaim)!.Value;
        var bases = view.Current.Nodes.Values.Select(n => n.Heartbeat.Model).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToList();
        var result = bases.Select(b => new ModelEntry(b, "model", 0, "system")).ToList();
        var own = await store.ListAsync(tenant, cancellationToken);
        var shared = tenant == ModelId.PublicTenant ? [] : await store.ListAsync(ModelId.PublicTenant, cancellationToken);
        foreach (var a in own.OrderBy(a => a.Name, StringComparer.Ordinal))
            result.Add(new ModelEntry(new ModelId(a.BaseModel, null, a.Name).ToString(), "model", a.Created.ToUnixTimeSeconds(), tenant));
        foreach (var a in shared.OrderBy(a => a.Name, StringComparer.Ordinal))
            result.Add(new ModelEntry(new ModelId(a.BaseModel, ModelId.PublicTenant, a.Name).ToString(), "model", a.Created.ToUnixTimeSeconds(), ModelId.PublicTenant));
        return result;
    }
}
