using System.Globalization;
using System.Text.Json.Serialization;
using Serving.AdapterStore.Storage;
using StackExchange.Redis;

namespace Serving.AdapterStore.RewardHeads;

/// <summary>Metadata of one stored reward head version (the Redis hash, typed).</summary>
public sealed record RewardHeadMetadata : IStoredArtifact
{
    /// <summary><see cref="Kind"/> of the head-only form.</summary>
    public const string HeadOnlyKind = "reward-head";

    /// <summary><see cref="Kind"/> of the full Otter form.</summary>
    public const string OtterKind = "otter-side-network";

    /// <summary>Owning tenant.</summary>
    public required string Tenant { get; init; }
    /// <summary>Head name, unique per tenant.</summary>
    public required string Name { get; init; }
    /// <summary>Version number, 1-based, increasing.</summary>
    public long Version { get; init; }
    /// <summary>Base model id the head was validated against.</summary>
    public required string BaseModel { get; init; }
    /// <summary><see cref="HeadOnlyKind"/> or <see cref="OtterKind"/>.</summary>
    public required string Kind { get; init; }
    /// <summary>Hidden state read: 0 = embedding output, l = after block l (the Otter form reads its side stream after the last layer).</summary>
    public int Layer { get; init; }
    /// <summary><c>final_norm</c> or <c>hidden</c> (head-only form), <c>side_stream</c> (Otter form).</summary>
    public required string Input { get; init; }
    /// <summary><c>sum</c>, <c>last</c> or <c>mean</c>.</summary>
    public required string Pooling { get; init; }
    /// <summary>Activation between the head's dense layers.</summary>
    public required string Activation { get; init; }
    /// <summary>What the reward means (config.json's <c>label</c>), if given.</summary>
    public string? Label { get; init; }
    /// <summary>Parameters of the head (and of the side network, for the Otter form).</summary>
    public long Parameters { get; init; }
    /// <summary>Width of the side stream (Otter form; 0 for the head-only form).</summary>
    public int SideSize { get; init; }
    /// <summary>Name of the tensors file as uploaded.</summary>
    public required string TensorsFile { get; init; }
    /// <summary>XxHash64 of the stored payload (hex).</summary>
    public required string Checksum { get; init; }
    /// <summary>Creation time.</summary>
    public DateTimeOffset Created { get; init; }
    /// <summary>Size of the stored payload (config.json and the tensors, as uploaded).</summary>
    public long StoredBytes { get; init; }
    /// <summary>Number of payload chunks.</summary>
    public int Chunks { get; init; }
    /// <summary>XxHash64 (hex) of each payload chunk.</summary>
    public IReadOnlyList<string> ChunkHashes { get; init; } = [];

    // The payload is the upload itself: no separate original is kept.
    [JsonIgnore] int IStoredArtifact.OriginalChunks => 0;
    [JsonIgnore] long IStoredArtifact.OriginalArchiveBytes => 0;
    [JsonIgnore] IReadOnlyList<string> IStoredArtifact.OriginalChunkHashes => [];

    internal HashEntry[] ToHash() =>
    [
        new("tenant", Tenant), new("name", Name), new("version", Version), new("base_model", BaseModel), new("kind", Kind),
        new("layer", Layer), new("input", Input), new("pooling", Pooling), new("activation", Activation), new("label", Label ?? ""),
        new("parameters", Parameters), new("side_size", SideSize), new("tensors_file", TensorsFile), new("checksum", Checksum),
        new("created", Created.ToUnixTimeMilliseconds()), new("stored_bytes", StoredBytes), new("chunks", Chunks),
        new("chunk_hashes", string.Join(',', ChunkHashes)),
    ];

    internal static RewardHeadMetadata FromHash(HashEntry[] entries)
    {
        var d = entries.ToDictionary(e => e.Name.ToString(), e => e.Value.ToString());
        string S(string k) => d.TryGetValue(k, out var v) ? v : throw new StoreCorruptException($"Reward head metadata lacks field '{k}'.");
        long L(string k) => long.TryParse(S(k), NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) ? v
            : throw new StoreCorruptException($"Reward head metadata field '{k}' is not a number.");
        string[] List(string k) => S(k).Length == 0 ? [] : S(k).Split(',');
        return new RewardHeadMetadata
        {
            Tenant = S("tenant"), Name = S("name"), Version = L("version"), BaseModel = S("base_model"), Kind = S("kind"),
            Layer = (int)L("layer"), Input = S("input"), Pooling = S("pooling"), Activation = S("activation"),
            Label = S("label") is { Length: > 0 } label ? label : null, Parameters = L("parameters"), SideSize = (int)L("side_size"),
            TensorsFile = S("tensors_file"), Checksum = S("checksum"), Created = DateTimeOffset.FromUnixTimeMilliseconds(L("created")),
            StoredBytes = L("stored_bytes"), Chunks = (int)L("chunks"), ChunkHashes = List("chunk_hashes"),
        };
    }
}

/// <summary>A publish or delete announcement on the reward heads' channel.</summary>
/// <param name="Op"><c>publish</c> or <c>delete</c>.</param>
/// <param name="Tenant">Tenant.</param>
/// <param name="Name">Head name.</param>
/// <param name="Version">Version published or deleted.</param>
/// <param name="Current">Current version after the change (0 when none is left).</param>
public sealed record RewardHeadEvent(string Op, string Tenant, string Name, long Version, long Current);
