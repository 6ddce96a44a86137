using System.Buffers.Binary;
using System.Diagnostics;
using Serving.AdapterStore.Compression;
using Serving.AdapterStore.Peft;
using Serving.AdapterStore.Storage;

namespace Serving.AdapterStore.Ingest;

/// <summary>One upload to validate, compress and publish.</summary>
/// <param name="Tenant">Owner.</param>
/// <param name="Name">Adapter name.</param>
/// <param name="BaseModel">Base model id, or null for the catalog's default.</param>
/// <param name="Files">The PEFT folder.</param>
/// <param name="Codec">Codec and parameters.</param>
/// <param name="KeepOriginal">Also store the original files (for download and re-compression).</param>
public sealed record UploadRequest(string Tenant, string Name, string? BaseModel, PeftFiles Files, CodecOptions Codec, bool KeepOriginal);

/// <summary>What the store tells the uploader.</summary>
/// <param name="Metadata">The stored version.</param>
/// <param name="Codec">Setting stored, ratio and predicted quality.</param>
/// <param name="Errors">Relative ΔW error per module (zeros for lossless).</param>
/// <param name="Notes">Ignored keys, corrections.</param>
/// <param name="ElapsedMs">Upload-to-available time inside the store.</param>
public sealed record UploadReport(AdapterMetadata Metadata, CodecReport Codec, IReadOnlyList<ModuleError> Errors, IReadOnlyList<string> Notes, double ElapsedMs);

/// <summary>The codec decision of one upload.</summary>
/// <param name="Requested">What the upload asked for (<see cref="CodecOptions.Describe"/>), e.g. <c>auto kept≥0.95</c>.</param>
/// <param name="Codec">The codec stored.</param>
/// <param name="Setting">The concrete setting stored, e.g. <c>quant svd err=0.3</c>.</param>
/// <param name="Ratio">fp16 file bytes / stored bytes.</param>
/// <param name="PredictedKept">Predicted fraction of the adapter's loss improvement kept (<see cref="AutoCodec.PredictKept"/>; 1 for lossless).</param>
/// <param name="Proxy">The data-free error split the prediction comes from.</param>
/// <param name="Warning">Set when <paramref name="PredictedKept"/> is below <see cref="AutoCodec.WarningKept"/>.</param>
public sealed record CodecReport(
    string Requested, AdapterCodec Codec, string Setting, double Ratio, double PredictedKept, ProxyError Proxy,
    [property: System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)] string? Warning);

/// <summary>Upload pipeline: validate against the base model, compress, measure the error, publish. Nothing is written before validation passes.</summary>
public sealed class AdapterIngestor(IAdapterStore store, IBaseModelCatalog catalog, TimeProvider? time = null)
{
    private readonly TimeProvider _time = time ?? TimeProvider.System;

    /// <summary>Runs the pipeline; throws <see cref="AdapterValidationException"/> for refused uploads.</summary>
    public async Task<UploadReport> IngestAsync(UploadRequest request, CancellationToken cancellationToken)
    {
        long start = _time.GetTimestamp();
        if (!AdapterKeys.IsValidName(request.Name))
            throw new AdapterValidationException(AdapterErrors.NameInvalid,
                $"Adapter name '{request.Name}' is invalid: use 1–64 of a-z, 0-9, '.', '-', '_', starting with a letter or digit.", status: 400);
        string baseModel = string.IsNullOrEmpty(request.BaseModel) ? catalog.DefaultModel : request.BaseModel;
        if (!catalog.TryGet(baseModel, out var shape))
            throw new AdapterValidationException(AdapterErrors.BaseModelUnknown,
                $"Base model '{baseModel}' is not served here; known: {string.Join(", ", catalog.Ids)}.", status: 400);
        try
        {
            request.Codec.Validate();
        }
        catch (ArgumentException e)
        {
            throw new AdapterValidationException(AdapterErrors.CodecInvalid, e.Message, status: 400);
        }

        var validated = PeftAdapterReader.Read(request.Files.ConfigJson, request.Files.Safetensors, shape);
        var payload = validated.Payload;
        byte[] container;
        CodecOptions stored;
        if (request.Codec.Codec == AdapterCodec.Auto && payload.Manifest.Kind == AdapterKind.Lora)
        {
            var choice = AutoCodec.Choose(payload, request.Codec.Auto);
            (container, stored) = (choice.Container, choice.Chosen);
        }
        else
        {
            stored = payload.Manifest.Kind == AdapterKind.Lora ? request.Codec : new CodecOptions { Codec = AdapterCodec.Lossless };
            container = AdapterContainer.Encode(payload, stored);
        }
        var original = AdapterMaterializer.Materialize(payload);
        var decoded = AdapterMaterializer.Materialize(AdapterContainer.Decode(container));
        var errors = ReconstructionError.Compute(original, decoded);
        var proxy = QualityProxy.Compute(original, decoded);
        double predicted = stored.Codec == AdapterCodec.Lossless ? 1 : AutoCodec.PredictKept(proxy);

        long parameters = payload.Tensors.Sum(t => t.ElementCount);
        long headerBytes = request.Files.Safetensors.Length >= 8 ? (long)BinaryPrimitives.ReadUInt64LittleEndian(request.Files.Safetensors) : 0;
        long fp16 = 8 + headerBytes + 2 * parameters;
        var codec = stored.Codec;
        var draft = new AdapterMetadata
        {
            Tenant = request.Tenant,
            Name = request.Name,
            BaseModel = baseModel,
            Kind = payload.Manifest.Kind,
            Codec = codec,
            Rank = original.MaxRank,
            Targets = payload.Manifest.Modules.Select(m => m.Module).Distinct().ToList(),
            Layers = payload.Manifest.Modules.Select(m => m.Layer).Distinct().Count(),
            Parameters = parameters,
            OriginalBytes = request.Files.Safetensors.Length,
            Fp16Bytes = fp16,
            Ratio = fp16 / (double)container.Length,
            Setting = stored.Describe(),
            PredictedKept = predicted,
            Density = codec == AdapterCodec.ComPeft ? stored.ComPeft.Density : 0,
            Factor = codec == AdapterCodec.ComPeft ? stored.ComPeft.Factor : 0,
            MaxRelativeError = errors.Count == 0 ? 0 : errors.Max(e => e.Relative),
            MeanRelativeError = errors.Count == 0 ? 0 : errors.Average(e => e.Relative),
            Checksum = "",
        };
        var notes = validated.Notes.ToList();
        if (request.Codec.Codec != AdapterCodec.Lossless && codec == AdapterCodec.Lossless)
            notes.Add($"{payload.Manifest.Kind} adapters are stored losslessly: they are already compact, and a lossy codec would damage their shared basis");
        string? warning = predicted < AutoCodec.WarningKept
            ? string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"The setting '{stored.Describe()}' is predicted to keep only {predicted:P0} of the adapter's improvement; upload with codec=auto (or lossless) to keep its quality.")
            : null;
        var report = new CodecReport(request.Codec.Describe(), codec, stored.Describe(), fp16 / (double)container.Length, predicted, proxy, warning);
        var meta = await store.PublishAsync(draft, container, request.KeepOriginal ? request.Files.ToTar() : null, cancellationToken);
        return new UploadReport(meta, report, errors, notes, _time.GetElapsedTime(start).TotalMilliseconds);
    }
}
