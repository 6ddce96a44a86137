using System.Globalization;
using StackExchange.Redis;
using Serving.AdapterStore.Compression;

namespace Serving.AdapterStore.Storage;

/// <summary>Metadata of one stored adapter version (the Redis hash, typed).</summary>
public sealed record AdapterMetadata : IStoredArtifact
{
    /// <summary>Owning tenant.</summary>
    public required string Tenant { get; init; }
    /// <summary>Adapter name, unique per tenant.</summary>
    public required string Name { get; init; }
    /// <summary>Version number, 1-based, increasing.</summary>
    public long Version { get; init; }
    /// <summary>Base model id the adapter was validated against.</summary>
    public required string BaseModel { get; init; }
    /// <summary>Parameterisation.</summary>
    public AdapterKind Kind { get; init; }
    /// <summary>Codec of the payload.</summary>
    public AdapterCodec Codec { get; init; }
    /// <summary>Largest rank.</summary>
    public int Rank { get; init; }
    /// <summary>Adapted module names (layer-relative, distinct).</summary>
    public IReadOnlyList<string> Targets { get; init; } = [];
    /// <summary>Number of adapted layers.</summary>
    public int Layers { get; init; }
    /// <summary>Parameter count of the uploaded tensors.</summary>
    public long Parameters { get; init; }
    /// <summary>Size of the uploaded safetensors file.</summary>
    public long OriginalBytes { get; init; }
    /// <summary>Size of the same tensors as an fp16 safetensors file.</summary>
    public long Fp16Bytes { get; init; }
    /// <summary>Size of the stored container.</summary>
    public long StoredBytes { get; init; }
    /// <summary><see cref="Fp16Bytes"/> / <see cref="StoredBytes"/>.</summary>
    public double Ratio { get; init; }
    /// <summary>The codec setting stored (<see cref="CodecOptions.Describe"/>); empty for versions stored before it was recorded.</summary>
    public string Setting { get; init; } = "";
    /// <summary>Predicted fraction of the adapter's improvement kept by the stored setting; null when not recorded.</summary>
    public double? PredictedKept { get; init; }
    /// <summary>ComPEFT density (0 for other codecs).</summary>
    public double Density { get; init; }
    /// <summary>ComPEFT α factor (0 for other codecs).</summary>
    public double Factor { get; init; }
    /// <summary>Largest per-module relative error ‖ΔW − ΔŴ‖/‖ΔW‖.</summary>
    public double MaxRelativeError { get; init; }
    /// <summary>Mean per-module relative error.</summary>
    public double MeanRelativeError { get; init; }
    /// <summary>XxHash64 of the whole container (hex).</summary>
    public required string Checksum { get; init; }
    /// <summary>Creation time.</summary>
    public DateTimeOffset Created { get; init; }
    /// <summary>Number of payload chunks.</summary>
    public int Chunks { get; init; }
    /// <summary>XxHash64 (hex) of each payload chunk, to name the damaged one.</summary>
    public IReadOnlyList<string> ChunkHashes { get; init; } = [];
    /// <summary>Number of chunks of the kept original (0 when not kept).</summary>
    public int OriginalChunks { get; init; }
    /// <summary>Size of the kept original archive.</summary>
    public long OriginalArchiveBytes { get; init; }
    /// <summary>XxHash64 (hex) of each original chunk.</summary>
    public IReadOnlyList<string> OriginalChunkHashes { get; init; } = [];

    internal HashEntry[] ToHash() =>
    [
        .. PredictedKept is double kept ? new HashEntry[] { new("predicted_kept", kept.ToString("R", CultureInfo.InvariantCulture)) } : [],
        new("setting", Setting),
        new("tenant", Tenant), new("name", Name), new("version", Version), new("base_model", BaseModel),
        new("kind", Kind.ToString()), new("codec", Codec.ToString()), new("rank", Rank), new("targets", string.Join(',', Targets)),
        new("layers", Layers), new("parameters", Parameters), new("original_bytes", OriginalBytes), new("fp16_bytes", Fp16Bytes),
        new("stored_bytes", StoredBytes), new("ratio", Ratio.ToString("R", CultureInfo.InvariantCulture)),
        new("density", Density.ToString("R", CultureInfo.InvariantCulture)), new("factor", Factor.ToString("R", CultureInfo.InvariantCulture)),
        new("max_rel_error", MaxRelativeError.ToString("R", CultureInfo.InvariantCulture)),
        new("mean_rel_error", MeanRelativeError.ToString("R", CultureInfo.InvariantCulture)),
        new("checksum", Checksum), new("created", Created.ToUnixTimeMilliseconds()), new("chunks", Chunks),
        new("chunk_hashes", string.Join(',', ChunkHashes)), new("original_chunks", OriginalChunks),
        new("original_archive_bytes", OriginalArchiveBytes), new("original_chunk_hashes", string.Join(',', OriginalChunkHashes)),
    ];

    internal static AdapterMetadata FromHash(HashEntry[] entries)
    {
        var d = entries.ToDictionary(e => e.Name.ToString(), e => e.Value.ToString());
        string S(string k) => d.TryGetValue(k, out var v) ? v : throw new StoreCorruptException($"Metadata hash lacks field '{k}'.");
        long L(string k) => long.Parse(S(k), CultureInfo.InvariantCulture);
        double D(string k) => double.Parse(S(k), CultureInfo.InvariantCulture);
        string[] List(string k) => S(k).Length == 0 ? [] : S(k).Split(',');
        // Fields added after the first stored versions: absent in older hashes.
        string Optional(string k) => d.TryGetValue(k, out var v) ? v : "";
        return new AdapterMetadata
        {
            Tenant = S("tenant"), Name = S("name"), Version = L("version"), BaseModel = S("base_model"),
            Kind = Enum.Parse<AdapterKind>(S("kind")), Codec = Enum.Parse<AdapterCodec>(S("codec")), Rank = (int)L("rank"),
            Targets = List("targets"), Layers = (int)L("layers"), Parameters = L("parameters"), OriginalBytes = L("original_bytes"),
            Fp16Bytes = L("fp16_bytes"), StoredBytes = L("stored_bytes"), Ratio = D("ratio"), Density = D("density"), Factor = D("factor"),
            Setting = Optional("setting"),
            PredictedKept = Optional("predicted_kept") is { Length: > 0 } p ? double.Parse(p, CultureInfo.InvariantCulture) : null,
            MaxRelativeError = D("max_rel_error"), MeanRelativeError = D("mean_rel_error"), Checksum = S("checksum"),
            Created = DateTimeOffset.FromUnixTimeMilliseconds(L("created")), Chunks = (int)L("chunks"), ChunkHashes = List("chunk_hashes"),
            OriginalChunks = (int)L("original_chunks"), OriginalArchiveBytes = L("original_archive_bytes"),
            OriginalChunkHashes = List("original_chunk_hashes"),
        };
    }
}

/// <summary>A publish or delete announcement on the store's channel.</summary>
/// <param name="Op"><c>publish</c> or <c>delete</c>.</param>
/// <param name="Tenant">Tenant.</param>
/// <param name="Name">Adapter name.</param>
/// <param name="Version">Version published or deleted.</param>
/// <param name="Current">Current version after the change (0 when none is left).</param>
public sealed record AdapterEvent(string Op, string Tenant, string Name, long Version, long Current);
