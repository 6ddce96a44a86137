using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Options;
using Serving.AdapterStore.Peft;
using Serving.AdapterStore.RewardHeads;
using Serving.AdapterStore.Storage;
using Serving.Contracts.Models;

namespace Serving.AdapterStore.Api;

/// <summary>Response of a successful reward head upload.</summary>
/// <param name="Head">Stored metadata.</param>
/// <param name="ElapsedMs">Time from received upload to available version.</param>
public sealed record RewardHeadUploadResponse(RewardHeadMetadata Head, double ElapsedMs);

/// <summary>
/// The reward head endpoints (<c>/v1/reward-heads</c>), mounted by the gateway (tenant from the API key) and by the
/// one-process host. A tenant uploads and deletes its own heads; it reads its own and <c>public</c>'s (a bare name is
/// the caller's head, else <c>public</c>'s, as the node resolves <c>reward_head</c>); another tenant's head is 404.
/// </summary>
public static class RewardHeadApi
{
    /// <summary>Base of ProblemDetails <c>type</c> URIs; the error code is appended.</summary>
    public const string ProblemTypeBase = "https://serving.local/problems/reward-heads/";

    /// <summary>Maps upload, list, get, versions and delete.</summary>
    public static RouteGroupBuilder MapRewardHeadApi(this IEndpointRouteBuilder endpoints, string prefix = "/v1/reward-heads")
    {
        var group = endpoints.MapGroup(prefix).WithTags("Reward heads");
        group.MapPost("/{name}", UploadAsync).DisableAntiforgery().WithName("UploadRewardHead")
            .WithSummary("Upload a reward head (multipart: config.json + head.safetensors or otter.safetensors; optional base_model)");
        group.MapGet("/", ListAsync).WithName("ListRewardHeads").WithSummary("The caller's reward heads, then public's");
        group.MapGet("/{name}", GetAsync).WithName("GetRewardHead").WithSummary("The current version of the caller's head, else public's");
        group.MapGet("/{name}/versions", VersionsAsync).WithName("ListRewardHeadVersions");
        group.MapGet("/{name}/versions/{version:long}", GetVersionAsync).WithName("GetRewardHeadVersion");
        group.MapDelete("/{name}", DeleteAsync).WithName("DeleteRewardHead").WithSummary("Delete every version of the caller's head");
        group.MapDelete("/{name}/versions/{version:long}", DeleteVersionAsync).WithName("DeleteRewardHeadVersion");
        return group;
    }

    /// <summary>The ProblemDetails for a refused upload: stable type and code, the message, the broader category when the code refines one.</summary>
    public static ProblemHttpResult Problem(AdapterValidationException e) =>
        Problems.Result(ProblemTypeBase, e.Status, e.Code, e.Message, e.Status == 413 ? "Upload too large" : "Reward head upload refused",
            e.Category is null ? null : [new("category", e.Category)]);

    private static ProblemHttpResult NotFound(string detail) => Problems.Result(ProblemTypeBase, 404, "not_found", detail, "Reward head not found");

    internal static async Task<Results<Created<RewardHeadUploadResponse>, ProblemHttpResult>> UploadAsync(
        string name, HttpRequest request, ITenantContext tenant, RewardHeadIngestor ingestor, IOptions<AdapterApiOptions> apiOptions, CancellationToken cancellationToken)
    {
        try
        {
            var (parts, fields) = await MultipartUpload.ReadAsync(request, apiOptions.Value.MaxRewardHeadUploadBytes,
                $"{RewardHeadFiles.ConfigName} and {RewardHeadFiles.HeadTensorsName} (or {RewardHeadFiles.OtterTensorsName})", cancellationToken);
            byte[]? config = null, tensors = null;
            string? tensorsName = null;
            bool pickle = false;
            foreach (var part in parts)
            {
                if (part.IsPickle) pickle = true;
                else if (part.FileName == RewardHeadFiles.ConfigName || part.Field is RewardHeadFiles.ConfigName or "config") config = part.Data;
                else if ((TensorsName(part.FileName) ?? TensorsName(part.Field)) is { } known)
                {
                    tensors = part.Data;
                    tensorsName = known;
                }
                else if (part.Field is "tensors" or "head" or "otter" || part.FileName.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
                {
                    tensors = part.Data;
                    tensorsName = null; // named after the config's kind below
                }
            }
            var files = RewardHeadFiles.From(config, tensors, tensorsName ?? (config is not null && Serving.Checkpoints.RewardHeads.OtterReader.IsOtter(config)
                ? RewardHeadFiles.OtterTensorsName : RewardHeadFiles.HeadTensorsName), pickle);
            fields.TryGetValue("base_model", out var baseModel);
            var report = await ingestor.IngestAsync(new RewardHeadUpload(tenant.TenantId, name, baseModel, files), cancellationToken);
            return TypedResults.Created($"{request.PathBase}{request.Path}/versions/{report.Head.Version}", new RewardHeadUploadResponse(report.Head, report.ElapsedMs));
        }
        catch (AdapterValidationException e)
        {
            return Problem(e);
        }
    }

    internal static async Task<Ok<IReadOnlyList<RewardHeadMetadata>>> ListAsync(ITenantContext tenant, IRewardHeadStore store, CancellationToken cancellationToken)
    {
        var list = new List<RewardHeadMetadata>(await store.ListAsync(tenant.TenantId, cancellationToken));
        if (tenant.TenantId != ModelId.PublicTenant) list.AddRange(await store.ListAsync(ModelId.PublicTenant, cancellationToken));
        return TypedResults.Ok<IReadOnlyList<RewardHeadMetadata>>(list);
    }

    internal static Task<Results<Ok<RewardHeadMetadata>, ProblemHttpResult>> GetAsync(string name, ITenantContext tenant, IRewardHeadStore store, CancellationToken cancellationToken) =>
        GetVersionCoreAsync(name, null, tenant, store, cancellationToken);

    internal static Task<Results<Ok<RewardHeadMetadata>, ProblemHttpResult>> GetVersionAsync(string name, long version, ITenantContext tenant, IRewardHeadStore store, CancellationToken cancellationToken) =>
        GetVersionCoreAsync(name, version, tenant, store, cancellationToken);

    private static async Task<Results<Ok<RewardHeadMetadata>, ProblemHttpResult>> GetVersionCoreAsync(string name, long? version, ITenantContext tenant, IRewardHeadStore store, CancellationToken cancellationToken)
    {
        if (!AdapterKeys.IsValidName(name) || await OwnerAsync(name, tenant, store, cancellationToken) is not { } owner) return NotFound($"No reward head '{name}'.");
        var meta = version is null ? owner.Current : await store.GetMetadataAsync(owner.Current.Tenant, name, version, cancellationToken);
        return meta is null ? NotFound($"No version {version} of reward head '{name}'.") : TypedResults.Ok(meta);
    }

    internal static async Task<Results<Ok<IReadOnlyList<RewardHeadMetadata>>, ProblemHttpResult>> VersionsAsync(string name, ITenantContext tenant, IRewardHeadStore store, CancellationToken cancellationToken)
    {
        if (!AdapterKeys.IsValidName(name) || await OwnerAsync(name, tenant, store, cancellationToken) is not { } owner) return NotFound($"No reward head '{name}'.");
        return TypedResults.Ok(await store.ListVersionsAsync(owner.Current.Tenant, name, cancellationToken));
    }

    internal static async Task<Results<NoContent, ProblemHttpResult>> DeleteAsync(string name, ITenantContext tenant, IRewardHeadStore store, CancellationToken cancellationToken)
    {
        if (!AdapterKeys.IsValidName(name)) return NotFound($"No reward head '{name}'.");
        return await store.DeleteAsync(tenant.TenantId, name, null, cancellationToken) ? TypedResults.NoContent() : NotFound($"No reward head '{name}' of this tenant.");
    }

    internal static async Task<Results<NoContent, ProblemHttpResult>> DeleteVersionAsync(string name, long version, ITenantContext tenant, IRewardHeadStore store, CancellationToken cancellationToken)
    {
        if (!AdapterKeys.IsValidName(name)) return NotFound($"No reward head '{name}'.");
        return await store.DeleteAsync(tenant.TenantId, name, version, cancellationToken) ? TypedResults.NoContent() : NotFound($"No version {version} of reward head '{name}' of this tenant.");
    }

    private static string? TensorsName(string name) => name is RewardHeadFiles.HeadTensorsName or RewardHeadFiles.OtterTensorsName ? name : null;

    /// <summary>The head <paramref name="name"/> the caller reads: its own tenant's, else <c>public</c>'s (current versions); null when neither has one.</summary>
    private static async Task<(RewardHeadMetadata Current, bool Own)?> OwnerAsync(string name, ITenantContext tenant, IRewardHeadStore store, CancellationToken cancellationToken)
    {
        if (await store.GetMetadataAsync(tenant.TenantId, name, null, cancellationToken) is { } own) return (own, true);
        if (tenant.TenantId != ModelId.PublicTenant && await store.GetMetadataAsync(ModelId.PublicTenant, name, null, cancellationToken) is { } shared) return (shared, false);
        return null;
    }
}
