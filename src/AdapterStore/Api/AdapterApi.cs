using System.Globalization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Options;
using Serving.AdapterStore.Compression;
using Serving.AdapterStore.Ingest;
using Serving.AdapterStore.Peft;
using Serving.AdapterStore.Storage;

namespace Serving.AdapterStore.Api;

/// <summary>Response of a successful upload.</summary>
/// <param name="Adapter">Stored metadata.</param>
/// <param name="Codec">The codec setting chosen (for <c>auto</c>, what it picked), the ratio and the predicted quality.</param>
/// <param name="Errors">Relative ΔW error per module.</param>
/// <param name="Notes">Ignored keys, corrections.</param>
/// <param name="ElapsedMs">Time from received upload to available version.</param>
/// <param name="Warning">Set when the stored setting is predicted to keep less than half of the adapter's improvement.</param>
public sealed record UploadResponse(
    AdapterMetadata Adapter, CodecReport Codec, IReadOnlyList<ModuleError> Errors, IReadOnlyList<string> Notes, double ElapsedMs,
    [property: System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)] string? Warning);

/// <summary>The adapter endpoints (<c>/v1/adapters</c>), mounted by the gateway and by the one-process host.</summary>
public static class AdapterApi
{
    /// <summary>Base of ProblemDetails <c>type</c> URIs; the error code is appended.</summary>
    public const string ProblemTypeBase = "https://serving.local/problems/adapters/";

    /// <summary>Maps upload, list, get, versions, original download and delete.</summary>
    public static RouteGroupBuilder MapAdapterApi(this IEndpointRouteBuilder endpoints, string prefix = "/v1/adapters")
    {
        var group = endpoints.MapGroup(prefix).WithTags("Adapters");
        group.MapPost("/{name}", UploadAsync).DisableAntiforgery().WithName("UploadAdapter");
        group.MapGet("/", ListAsync).WithName("ListAdapters");
        group.MapGet("/{name}", GetAsync).WithName("GetAdapter");
        group.MapGet("/{name}/versions", VersionsAsync).WithName("ListAdapterVersions");
        group.MapGet("/{name}/versions/{version:long}", GetVersionAsync).WithName("GetAdapterVersion");
        group.MapGet("/{name}/versions/{version:long}/original", OriginalAsync).WithName("DownloadAdapterOriginal");
        group.MapDelete("/{name}", DeleteAsync).WithName("DeleteAdapter");
        group.MapDelete("/{name}/versions/{version:long}", DeleteVersionAsync).WithName("DeleteAdapterVersion");
        return group;
    }

    /// <summary>The ProblemDetails for a refused upload: stable type, the message, the tensor when known.</summary>
    public static ProblemHttpResult Problem(AdapterValidationException e) =>
        Problems.Result(ProblemTypeBase, e.Status, e.Code, e.Message, e.Code == AdapterErrors.TooLarge ? "Upload too large" : "Adapter upload refused",
            e.Tensor is null ? null : [new("tensor", e.Tensor)]);

    private static ProblemHttpResult NotFound(string detail) => Problems.Result(ProblemTypeBase, 404, "not_found", detail, "Adapter not found");

    internal static async Task<Results<Created<UploadResponse>, ProblemHttpResult>> UploadAsync(
        string name, HttpRequest request, ITenantContext tenant, AdapterIngestor ingestor, IOptions<AdapterApiOptions> apiOptions, CancellationToken cancellationToken)
    {
        var options = apiOptions.Value;
        try
        {
            var (files, fields) = await ReadUploadAsync(request, options.MaxUploadBytes, cancellationToken);
            var codec = CodecFields.Parse(fields);
            bool keep = fields.TryGetValue("keep_original", out var k) ? ParseBool(k, "keep_original") : options.KeepOriginalByDefault;
            fields.TryGetValue("base_model", out var baseModel);
            var report = await ingestor.IngestAsync(new UploadRequest(tenant.TenantId, name, baseModel, files, codec, keep), cancellationToken);
            var body = new UploadResponse(report.Metadata, report.Codec, report.Errors, report.Notes, report.ElapsedMs, report.Codec.Warning);
            return TypedResults.Created($"{request.PathBase}{request.Path}/versions/{report.Metadata.Version}", body);
        }
        catch (AdapterValidationException e)
        {
            return Problem(e);
        }
        // A store failure (StoreUnavailableException: nothing became visible, the client may retry) is the host's to map.
    }

    private static bool ParseBool(string text, string field) =>
        bool.TryParse(text, out bool v) ? v
        : throw new AdapterValidationException(AdapterErrors.UploadInvalid, $"'{field}' must be true or false, got '{text}'.", status: 400);

    /// <summary>The PEFT files by field or file name, or one archive, and the form fields.</summary>
    private static async Task<(PeftFiles Files, Dictionary<string, string> Fields)> ReadUploadAsync(HttpRequest request, long maxBytes, CancellationToken cancellationToken)
    {
        var (parts, fields) = await MultipartUpload.ReadAsync(request, maxBytes, "adapter_config.json and adapter_model.safetensors, or one .tar/.zip archive", cancellationToken);
        byte[]? config = null, weights = null, archive = null;
        bool pickle = false;
        foreach (var part in parts)
        {
            var (field, file, data) = part;
            if (part.IsPickle) pickle = true;
            else if (file == PeftFiles.ConfigName || field is "config" or "adapter_config") config = data;
            else if (file == PeftFiles.WeightsName || field is "weights" or "adapter_model") weights = data;
            else if (field == "archive" || file.EndsWith(".tar", StringComparison.OrdinalIgnoreCase) || file.EndsWith(".zip", StringComparison.OrdinalIgnoreCase)) archive = data;
        }
        if (archive is not null && config is null && weights is null) return (PeftArchive.Read(archive, maxBytes), fields);
        return (PeftFiles.From(config, weights, pickle), fields);
    }

    internal static async Task<Ok<IReadOnlyList<AdapterMetadata>>> ListAsync(ITenantContext tenant, IAdapterStore store, CancellationToken cancellationToken) =>
        TypedResults.Ok(await store.ListAsync(tenant.TenantId, cancellationToken));

    internal static async Task<Results<Ok<AdapterMetadata>, ProblemHttpResult>> GetAsync(string name, ITenantContext tenant, IAdapterStore store, CancellationToken cancellationToken) =>
        await GetVersionCoreAsync(name, null, tenant, store, cancellationToken);

    internal static async Task<Results<Ok<AdapterMetadata>, ProblemHttpResult>> GetVersionAsync(string name, long version, ITenantContext tenant, IAdapterStore store, CancellationToken cancellationToken) =>
        await GetVersionCoreAsync(name, version, tenant, store, cancellationToken);

    private static async Task<Results<Ok<AdapterMetadata>, ProblemHttpResult>> GetVersionCoreAsync(string name, long? version, ITenantContext tenant, IAdapterStore store, CancellationToken cancellationToken)
    {
        if (!AdapterKeys.IsValidName(name)) return NotFound($"No adapter '{name}'.");
        var meta = await store.GetMetadataAsync(tenant.TenantId, name, version, cancellationToken);
        return meta is null ? NotFound(version is null ? $"No adapter '{name}'." : $"No version {version} of adapter '{name}'.") : TypedResults.Ok(meta);
    }

    internal static async Task<Results<Ok<IReadOnlyList<AdapterMetadata>>, ProblemHttpResult>> VersionsAsync(string name, ITenantContext tenant, IAdapterStore store, CancellationToken cancellationToken)
    {
        if (!AdapterKeys.IsValidName(name)) return NotFound($"No adapter '{name}'.");
        var versions = await store.ListVersionsAsync(tenant.TenantId, name, cancellationToken);
        return versions.Count == 0 ? NotFound($"No adapter '{name}'.") : TypedResults.Ok(versions);
    }

    internal static async Task<Results<FileContentHttpResult, ProblemHttpResult>> OriginalAsync(string name, long version, ITenantContext tenant, IAdapterStore store, CancellationToken cancellationToken)
    {
        if (!AdapterKeys.IsValidName(name)) return NotFound($"No adapter '{name}'.");
        // A damaged original (StoreCorruptException) is the host's to map, as every store failure.
        var tar = await store.ReadOriginalAsync(tenant.TenantId, name, version, cancellationToken);
        return tar is null
            ? NotFound($"No original kept for version {version} of adapter '{name}'.")
            : TypedResults.File(tar, "application/x-tar", $"{name}-v{version}.tar");
    }

    internal static async Task<Results<NoContent, ProblemHttpResult>> DeleteAsync(string name, ITenantContext tenant, IAdapterStore store, CancellationToken cancellationToken)
    {
        if (!AdapterKeys.IsValidName(name)) return NotFound($"No adapter '{name}'.");
        return await store.DeleteAsync(tenant.TenantId, name, null, cancellationToken) ? TypedResults.NoContent() : NotFound($"No adapter '{name}'.");
    }

    internal static async Task<Results<NoContent, ProblemHttpResult>> DeleteVersionAsync(string name, long version, ITenantContext tenant, IAdapterStore store, CancellationToken cancellationToken)
    {
        if (!AdapterKeys.IsValidName(name)) return NotFound($"No adapter '{name}'.");
        return await store.DeleteAsync(tenant.TenantId, name, version, cancellationToken) ? TypedResults.NoContent() : NotFound($"No version {version} of adapter '{name}'.");
    }
}
