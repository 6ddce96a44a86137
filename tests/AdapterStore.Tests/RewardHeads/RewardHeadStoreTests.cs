using System.Text.Json.Nodes;
using Serving.AdapterStore.Ingest;
using Serving.AdapterStore.Peft;
using Serving.AdapterStore.RewardHeads;
using Serving.AdapterStore.Storage;
using Serving.AdapterStore.Tests.Storage;
using Serving.Checkpoints;
using Serving.Checkpoints.RewardHeads;
using StackExchange.Redis;

namespace Serving.AdapterStore.Tests.RewardHeads;

/// <summary>
/// Reward heads in the store, run once against redis-server and once against embedded Garnet: the adapters' versioning,
/// chunking, checksums and events under their own keys, and the ingest's validation against the base config (a refused
/// upload leaves no key behind).
/// </summary>
public abstract class RewardHeadStoreContractTests : IDisposable
{
    private const string Base = "tiny";
    private static readonly CancellationToken Ct = CancellationToken.None;
    private readonly ConnectionMultiplexer _redis;
    private readonly string _prefix = "h" + Guid.NewGuid().ToString("N")[..10];
    private readonly RedisRewardHeadStore _store;
    private readonly RewardHeadIngestor _ingestor;
    private readonly ModelConfig _config = ModelConfig.Parse("""
        {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
         "num_key_value_heads": 1, "intermediate_size": 32, "vocab_size": 64, "max_position_embeddings": 64, "rms_norm_eps": 1e-5}
        """);
    private const string Tenant = "acme";

    protected RewardHeadStoreContractTests(IStoreServer server)
    {
        _redis = ConnectionMultiplexer.Connect(server.ConnectionString);
        var options = new AdapterStoreOptions { KeyPrefix = _prefix, ChunkBytes = 1024, KeepVersions = 3 };
        _store = new RedisRewardHeadStore(_redis, options);
        _ingestor = new RewardHeadIngestor(_store, new StaticBaseModelCatalog().Add(Base, _config).Add("other", ModelConfig.Parse("""
            {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 24, "num_hidden_layers": 2, "num_attention_heads": 2,
             "num_key_value_heads": 1, "intermediate_size": 32, "vocab_size": 64, "max_position_embeddings": 64}
            """)));
        AdapterStore = new RedisAdapterStore(_redis, options);
    }

    private RedisAdapterStore AdapterStore { get; }

    public void Dispose() => _redis.Dispose();

    private async Task<List<string>> KeysAsync()
    {
        var server = _redis.GetServers()[0];
        var keys = new List<string>();
        await foreach (var k in server.KeysAsync(pattern: _prefix + ":*")) keys.Add(k.ToString());
        return keys;
    }

    [Fact]
    public async Task Ingest_ThenRead_RoundTripsTheFilesAndDescribesTheHead()
    {
        var files = HeadFiles.Random(16, layer: 2, seed: 3, baseModel: Base);
        var report = await _ingestor.IngestAsync(new RewardHeadUpload(Tenant, "pos", null, files), Ct);
        var meta = report.Head;
        Assert.Equal((1, Base, "reward-head", 2, "final_norm", "sum", "tanh", "test head"), (meta.Version, meta.BaseModel, meta.Kind, meta.Layer, meta.Input, meta.Pooling, meta.Activation, meta.Label));
        Assert.Equal(8 * 16 + 8 + 8 + 1, meta.Parameters);
        Assert.True(meta.Chunks > 1, "the payload should span several 1 KiB chunks");

        var read = await _store.ReadAsync(Tenant, "pos", null, Ct);
        Assert.NotNull(read);
        Assert.Equal(files.ConfigJson, read.Files.ConfigJson);
        Assert.Equal(files.Tensors, read.Files.Tensors);
        Assert.Equal(RewardHeadFiles.HeadTensorsName, read.Files.TensorsName);
        Assert.Equal(RedisRewardHeadStore.ChecksumOf(read.Files.ToPayload()), read.Metadata.Checksum);
        // The node validates the same bytes against its own config.
        Assert.Equal(2, RewardHeadReader.Read(read.Files.ConfigJson, read.Files.Tensors, _config).Layer);
    }

    [Fact]
    public async Task Republish_MovesTheCurrentVersion_AnnouncesOnTheHeadsChannel_AndAdaptersNeverSeeIt()
    {
        var heads = new List<RewardHeadEvent>();
        var adapters = new List<AdapterEvent>();
        var seen = new SemaphoreSlim(0);
        await using var h = await _store.SubscribeAsync(e => { lock (heads) heads.Add(e); seen.Release(); }, Ct);
        await using var a = await AdapterStore.SubscribeAsync(e => { lock (adapters) adapters.Add(e); }, Ct);

        await _ingestor.IngestAsync(new RewardHeadUpload(Tenant, "pos", Base, HeadFiles.Random(16, seed: 1)), Ct);
        await _ingestor.IngestAsync(new RewardHeadUpload(Tenant, "pos", Base, HeadFiles.Random(16, seed: 1, biasShift: 1)), Ct);
        Assert.True(await seen.WaitAsync(TimeSpan.FromSeconds(10)) && await seen.WaitAsync(TimeSpan.FromSeconds(10)), "two publish events");
        Assert.Equal(2, (await _store.GetMetadataAsync(Tenant, "pos", null, Ct))!.Version);
        Assert.Equal([1L, 2L], (await _store.ListVersionsAsync(Tenant, "pos", Ct)).Select(m => m.Version));
        lock (heads) Assert.Equal([("publish", 1L, 1L), ("publish", 2L, 2L)], heads.Select(e => (e.Op, e.Version, e.Current)));

        // An adapter of the same name lives under other keys; each kind's subscribers see only their own events.
        await AdapterStore.PublishAsync(new AdapterMetadata { Tenant = Tenant, Name = "pos", BaseModel = Base, Checksum = "" },
            Storage.AdapterStoreContractTests.Container(1), null, Ct);
        Assert.Equal(2, (await _store.GetMetadataAsync(Tenant, "pos", null, Ct))!.Version);
        Assert.Single(await AdapterStore.ListAsync(Tenant, Ct));
        Assert.Single(await _store.ListAsync(Tenant, Ct));
        Assert.True(await _store.DeleteAsync(Tenant, "pos", null, Ct));
        // Deleting the name deletes each version in turn: one event per version, the last one with nothing current.
        Assert.True(await seen.WaitAsync(TimeSpan.FromSeconds(10)) && await seen.WaitAsync(TimeSpan.FromSeconds(10)), "a delete event per version");
        Assert.NotNull(await AdapterStore.GetMetadataAsync(Tenant, "pos", null, Ct));
        lock (heads) Assert.Equal([("delete", 1L, 2L), ("delete", 2L, 0L)], heads.Skip(2).Select(e => (e.Op, e.Version, e.Current)));
        lock (adapters) Assert.All(adapters, e => Assert.Equal("publish", e.Op));
    }

    [Fact]
    public async Task Delete_RemovesEveryKeyOfTheHead()
    {
        await _ingestor.IngestAsync(new RewardHeadUpload(Tenant, "gone", Base, HeadFiles.Random(16)), Ct);
        await _ingestor.IngestAsync(new RewardHeadUpload(Tenant, "gone", Base, HeadFiles.Random(16, seed: 2)), Ct);
        Assert.True(await _store.DeleteAsync(Tenant, "gone", null, Ct));
        Assert.Null(await _store.ReadAsync(Tenant, "gone", null, Ct));
        Assert.Empty(await _store.ListAsync(Tenant, Ct));
        // Only the version counter stays (versions are never reused).
        Assert.Equal([_store.Keys.Sequence(Tenant, "gone")], await KeysAsync());
    }

    [Fact]
    public async Task CorruptedChunk_ReadRefusesIt()
    {
        var meta = (await _ingestor.IngestAsync(new RewardHeadUpload(Tenant, "bad", Base, HeadFiles.Random(16)), Ct)).Head;
        await _redis.GetDatabase().StringSetRangeAsync(_store.Keys.Chunk(Tenant, "bad", meta.Version, 1), 3, new byte[] { 0xff, 0xfe });
        var e = await Assert.ThrowsAsync<StoreCorruptException>(() => _store.ReadAsync(Tenant, "bad", null, Ct));
        Assert.Contains("chunk 1", e.Message);
    }

    public static TheoryData<string, string, int> Refusals() => new()
    {
        { "not_json", RewardHeadFormatException.InvalidConfig, 400 },
        { "no_layer", RewardHeadFormatException.InvalidConfig, 400 },
        { "bad_pooling", RewardHeadFormatException.InvalidConfig, 400 },
        { "truncated_tensors", RewardHeadFormatException.SafetensorsInvalid, 400 },
        { "missing_tensor", RewardHeadFormatException.TensorMissing, 400 },
        { "not_finite", RewardHeadFormatException.TensorNotFinite, 400 },
        { "two_outputs", RewardHeadFormatException.TensorShape, 400 },
        { "layer_out_of_range", RewardHeadFormatException.BaseMismatch, 422 },
        { "other_width", RewardHeadFormatException.BaseMismatch, 422 },
        { "other_base_name", RewardHeadFormatException.BaseMismatch, 422 },
        { "made_for_other_base", RewardHeadFormatException.BaseMismatch, 422 },
        { "unknown_base", AdapterErrors.BaseModelUnknown, 400 },
        { "bad_name", AdapterErrors.NameInvalid, 400 },
    };

    [Theory]
    [MemberData(nameof(Refusals))]
    public async Task Ingest_BadHead_SpecificRefusal_AndNothingStored(string variant, string code, int status)
    {
        var good = HeadFiles.Random(16);
        string name = "h", baseModel = Base;
        var files = variant switch
        {
            "not_json" => good with { ConfigJson = "{\"kind\": \"reward-head\", "u8.ToArray() },
            "no_layer" => HeadFiles.Random(16, editConfig: c => c.Remove("layer")),
            "bad_pooling" => HeadFiles.Random(16, editConfig: c => c["pooling"] = "max"),
            "truncated_tensors" => good with { Tensors = good.Tensors[..20] },
            "missing_tensor" => HeadFiles.Random(16, dropBias: true),
            "not_finite" => HeadFiles.Random(16, poison: float.NaN),
            "two_outputs" => HeadFiles.Random(16, editConfig: c => c["layers"]!.AsArray().RemoveAt(1)),
            "layer_out_of_range" => HeadFiles.Random(16, layer: 3),
            "other_width" => HeadFiles.Random(24),
            "other_base_name" => HeadFiles.Random(16, baseModel: "some-other-model"),
            "made_for_other_base" => HeadFiles.Random(16, baseModel: "other"),
            _ => good,
        };
        if (variant == "unknown_base") baseModel = "nope";
        if (variant == "bad_name") name = "Bad/Name";
        var e = await Assert.ThrowsAsync<AdapterValidationException>(() => _ingestor.IngestAsync(new RewardHeadUpload(Tenant, name, baseModel, files), Ct));
        Assert.Equal((code, status), (e.Code, e.Status));
        Assert.False(string.IsNullOrWhiteSpace(e.Message));
        Assert.Empty(await KeysAsync());
    }

    [Fact]
    public async Task Ingest_OtherBaseDeclared_ValidatesAgainstThatBaseWhenTheUploadNamesNone()
    {
        // base_model in config.json picks a served base when the upload names none: the 24-wide head fits "other".
        var meta = (await _ingestor.IngestAsync(new RewardHeadUpload(Tenant, "wide", null, HeadFiles.Random(24, baseModel: "other")), Ct)).Head;
        Assert.Equal("other", meta.BaseModel);
    }
}

public sealed class RedisRewardHeadStoreTests(RedisFixture server) : RewardHeadStoreContractTests(server), IClassFixture<RedisFixture>;

public sealed class GarnetRewardHeadStoreTests(GarnetFixture server) : RewardHeadStoreContractTests(server), IClassFixture<GarnetFixture>;
