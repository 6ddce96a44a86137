using System.Text.Json;
using Serving.AdapterStore.Ingest;
using Serving.AdapterStore.Peft;
using Serving.AdapterStore.Storage;
using Serving.Checkpoints;
using Serving.Checkpoints.RewardHeads;

namespace Serving.AdapterStore.RewardHeads;

/// <summary>One reward head upload.</summary>
/// <param name="Tenant">Owner.</param>
/// <param name="Name">Head name.</param>
/// <param name="BaseModel">Base model id; null: the head's own <c>base_model</c> when the catalog serves it, else the catalog's default.</param>
/// <param name="Files">config.json and the tensors.</param>
public sealed record RewardHeadUpload(string Tenant, string Name, string? BaseModel, RewardHeadFiles Files);

/// <summary>What the store tells the uploader.</summary>
/// <param name="Head">The stored version.</param>
/// <param name="ElapsedMs">Upload-to-available time inside the store.</param>
public sealed record RewardHeadUploadReport(RewardHeadMetadata Head, double ElapsedMs);

/// <summary>
/// Upload pipeline of reward heads: the files are validated against the base model's config with the readers the node
/// uses (<see cref="RewardHeadReader"/>, <see cref="OtterReader"/>), then published as they were sent. Nothing is written
/// before validation passes. Refusals are <see cref="AdapterValidationException"/>s: 400 for malformed files (the
/// reader's code, refined by its reason for the tensors), 413 for a head past the parameter limit, 422 for a head made
/// for another base (layer out of range, input width, layer count, <c>base_model</c> naming another model).
/// </summary>
public sealed class RewardHeadIngestor(IRewardHeadStore store, IBaseModelCatalog catalog, TimeProvider? time = null)
{
    private readonly TimeProvider _time = time ?? TimeProvider.System;

    /// <summary>Validates and publishes; throws <see cref="AdapterValidationException"/> for refused uploads.</summary>
    public async Task<RewardHeadUploadReport> IngestAsync(RewardHeadUpload request, CancellationToken cancellationToken)
    {
        long start = _time.GetTimestamp();
        if (!AdapterKeys.IsValidName(request.Name))
        {
            throw new AdapterValidationException(AdapterErrors.NameInvalid,
                $"Reward head name '{request.Name}' is invalid: use 1–64 of a-z, 0-9, '.', '-', '_', starting with a letter or digit.", status: 400);
        }
        var declared = DeclaredBase(request.Files.ConfigJson);
        string baseModel = !string.IsNullOrEmpty(request.BaseModel) ? request.BaseModel
            : declared is not null && catalog.TryGet(declared, out _) ? declared
            : catalog.DefaultModel;
        if (!catalog.TryGet(baseModel, out _))
        {
            throw new AdapterValidationException(AdapterErrors.BaseModelUnknown,
                $"Base model '{baseModel}' is not served here; known: {string.Join(", ", catalog.Ids)}.", status: 400);
        }
        if (!catalog.TryGetConfig(baseModel, out var config))
        {
            throw new AdapterValidationException(RewardHeadErrors.BaseConfigUnknown,
                $"Base model '{baseModel}' has no config.json here to validate reward heads against.", status: 400);
        }
        if (declared is not null && declared != baseModel)
        {
            throw new AdapterValidationException(RewardHeadFormatException.BaseMismatch,
                $"config.json says the head was made for base model '{declared}', but it is uploaded for '{baseModel}'; upload it with base_model={declared} or retrain it on '{baseModel}'.",
                status: 422);
        }

        var draft = Describe(request, baseModel, config);
        var meta = await store.PublishAsync(draft, request.Files, cancellationToken).ConfigureAwait(false);
        return new RewardHeadUploadReport(meta, _time.GetElapsedTime(start).TotalMilliseconds);
    }

    /// <summary>Validates the files against <paramref name="config"/> and describes them (the store fills in the storage facts).</summary>
    private static RewardHeadMetadata Describe(RewardHeadUpload request, string baseModel, ModelConfig config)
    {
        var files = request.Files;
        try
        {
            if (files.IsOtter)
            {
                var otter = OtterReader.Read(files.ConfigJson, files.Tensors, config);
                return new RewardHeadMetadata
                {
                    Tenant = request.Tenant, Name = request.Name, BaseModel = baseModel, Kind = RewardHeadMetadata.OtterKind,
                    Layer = config.NumLayers, Input = "side_stream", Pooling = Text(otter.Pooling), Activation = Text(otter.Activation),
                    Label = otter.Label, Parameters = otter.Parameters, SideSize = otter.SideSize, TensorsFile = files.TensorsName, Checksum = "",
                };
            }
            var head = RewardHeadReader.Read(files.ConfigJson, files.Tensors, config);
            return new RewardHeadMetadata
            {
                Tenant = request.Tenant, Name = request.Name, BaseModel = baseModel, Kind = RewardHeadMetadata.HeadOnlyKind,
                Layer = head.Layer, Input = head.Input == RewardHeadInput.FinalNorm ? "final_norm" : "hidden", Pooling = Text(head.Pooling),
                Activation = Text(head.Activation), Label = head.Label, Parameters = head.Parameters, TensorsFile = files.TensorsName, Checksum = "",
            };
        }
        catch (RewardHeadFormatException e)
        {
            throw Refusal(e, files);
        }
    }

    /// <summary>The upload's refusal for a reader's failure: its reason (or code) as the code, the reader's code as the category.</summary>
    public static AdapterValidationException Refusal(RewardHeadFormatException e, RewardHeadFiles files)
    {
        int status = e.Code == RewardHeadFormatException.BaseMismatch ? 422 : e.Reason == RewardHeadFormatException.TooLarge ? 413 : 400;
        string where = e.Code == RewardHeadFormatException.InvalidConfig ? RewardHeadFiles.ConfigName : files.TensorsName;
        string text = e.Message.TrimEnd('.');
        string message = e.Code == RewardHeadFormatException.BaseMismatch ? $"The reward head does not fit the base model: {text}."
            : text.Contains(where, StringComparison.Ordinal) || text.StartsWith("config.json", StringComparison.Ordinal) ? text + "."
            : $"{where}: {text}.";
        return new AdapterValidationException(e.Reason ?? e.Code, message, status: status, category: e.Reason is null ? null : e.Code);
    }

    /// <summary>config.json's <c>base_model</c>, when it is a string.</summary>
    private static string? DeclaredBase(byte[] configJson)
    {
        try
        {
            using var doc = JsonDocument.Parse(configJson);
            return doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("base_model", out var b) && b.ValueKind == JsonValueKind.String
                ? b.GetString()
                : null;
        }
        catch (JsonException)
        {
            return null; // the reader names the syntax error
        }
    }

    private static string Text(RewardPooling p) => p switch
    {
        RewardPooling.Sum => "sum",
        RewardPooling.Mean => "mean",
        _ => "last",
    };

    private static string Text(RewardActivation a) => a.ToString().ToLowerInvariant();
}
