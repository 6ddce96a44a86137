using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.DependencyInjection;
using Serving.AdapterStore.Ingest;
using Serving.AdapterStore.RewardHeads;
using Serving.AdapterStore.Storage;
using Serving.AdapterStore.Tests.RewardHeads;
using Serving.Checkpoints;
using Serving.Checkpoints.RewardHeads;
using Serving.Inference.Engine;
using Serving.Inference.Node.Hosting;
using Serving.Inference.Node.RewardHeads;
using Serving.Inference.Rewards;
using StackExchange.Redis;
using Xunit;
using Xunit.Abstractions;

namespace Serving.Inference.Node.Tests.Alignment;

/// <summary>Counts payload reads per head, to see single-flight loads.</summary>
public sealed class CountingHeadStore(IRewardHeadStore inner) : IRewardHeadStore
{
    public ConcurrentDictionary<string, int> Reads { get; } = new();
    public Task<RewardHeadMetadata> PublishAsync(RewardHeadMetadata draft, RewardHeadFiles files, CancellationToken ct) => inner.PublishAsync(draft, files, ct);
    public Task<RewardHeadMetadata?> GetMetadataAsync(string tenant, string name, long? version, CancellationToken ct) => inner.GetMetadataAsync(tenant, name, version, ct);
    public Task<IReadOnlyList<RewardHeadMetadata>> ListAsync(string tenant, CancellationToken ct) => inner.ListAsync(tenant, ct);
    public Task<IReadOnlyList<RewardHeadMetadata>> ListVersionsAsync(string tenant, string name, CancellationToken ct) => inner.ListVersionsAsync(tenant, name, ct);
    public Task<bool> DeleteAsync(string tenant, string name, long? version, CancellationToken ct) => inner.DeleteAsync(tenant, name, version, ct);
    public Task<IAsyncDisposable> SubscribeAsync(Action<RewardHeadEvent> handler, CancellationToken ct) => inner.SubscribeAsync(handler, ct);

    public Task<StoredRewardHead?> ReadAsync(string tenant, string name, long? version, CancellationToken ct)
    {
        Reads.AddOrUpdate($"{tenant}/{name}", 1, (_, n) => n + 1);
        return inner.ReadAsync(tenant, name, version, ct);
    }
}

/// <summary>An embedded Garnet holding reward heads published through the store's ingest, and a demo-model node reading them.</summary>
public sealed class StoreHeadNode : IAsyncLifetime
{
    public const string Base = "demo";
    public EmbeddedGarnet Garnet { get; private set; } = null!;
    public ConnectionMultiplexer Redis { get; private set; } = null!;
    public RedisRewardHeadStore Store { get; private set; } = null!;
    public RewardHeadIngestor Ingestor { get; private set; } = null!;
    public CountingHeadStore Counting { get; private set; } = null!;
    public NodeServer Server { get; private set; } = null!;
    public ModelConfig Config { get; } = ModelConfig.Load(Path.Combine(DemoRewardNode.Demo, "config.json"));

    public async Task InitializeAsync()
    {
        Garnet = new EmbeddedGarnet(memory: "256m");
        Redis = await ConnectionMultiplexer.ConnectAsync(Garnet.ConnectionString);
        Store = new RedisRewardHeadStore(Redis, new AdapterStoreOptions());
        Ingestor = new RewardHeadIngestor(Store, new StaticBaseModelCatalog().Add(Base, Config));
        Server = await StartNodeAsync(counting: true);
    }

    public Task<NodeServer> StartNodeAsync(Dictionary<string, string?>? extra = null, bool counting = false)
    {
        var settings = new Dictionary<string, string?>
        {
            ["Node:ModelPath"] = DemoRewardNode.Demo,
            ["Node:ModelId"] = Base,
            ["Node:MaxContext"] = "512",
            ["Node:Redis"] = Garnet.ConnectionString,
        };
        foreach (var (k, v) in extra ?? []) settings[k] = v;
        return NodeServer.StartAsync(settings, services => services.AddSingleton<IRewardHeadStore>(sp =>
        {
            var store = new CountingHeadStore(new RedisRewardHeadStore(sp.GetRequiredService<IConnectionMultiplexer>(), new AdapterStoreOptions()));
            if (counting) Counting = store;
            return store;
        }));
    }

    public Task<RewardHeadUploadReport> PublishAsync(string tenant, string name, RewardHeadFiles files) =>
        Ingestor.IngestAsync(new RewardHeadUpload(tenant, name, Base, files), CancellationToken.None);

    public async Task DisposeAsync()
    {
        await Server.DisposeAsync();
        Redis.Dispose();
        Garnet.Dispose();
    }
}

/// <summary>
/// Reward heads the node reads from the store (<c>Node:Redis</c>): the same rewards as the folder head, tenant visibility,
/// one load for many concurrent first uses, a new version or a delete seen through the store's events, the Otter form.
/// </summary>
public sealed class StoreRewardHeadTests(StoreHeadNode node, ITestOutputHelper output) : IClassFixture<StoreHeadNode>
{
    private static readonly string DemoHead = Path.Combine(DemoRewardNode.Demo, "reward-head");

    private static HttpRequestMessage Completion(string? tenant, object extra, int maxTokens = 12)
    {
        var body = new JsonObject { ["model"] = "demo", ["prompt"] = "<|endoftext|>The cat", ["max_tokens"] = maxTokens, ["temperature"] = 0, ["ignore_eos"] = true };
        foreach (var (k, v) in JsonNode.Parse(JsonSerializer.Serialize(extra))!.AsObject()) body[k] = v?.DeepClone();
        var request = new HttpRequestMessage(HttpMethod.Post, "v1/completions") { Content = JsonContent.Create(body) };
        if (tenant is not null) request.Headers.Add("X-Serving-Tenant", tenant);
        return request;
    }

    private async Task<(HttpStatusCode Status, JsonObject Json, string? Head)> SendAsync(HttpRequestMessage request)
    {
        using var response = await node.Server.Http.SendAsync(request);
        var json = JsonNode.Parse(await response.Content.ReadAsStringAsync())!.AsObject();
        return (response.StatusCode, json, response.Headers.TryGetValues("X-Serving-Reward-Head", out var h) ? h.Single() : null);
    }

    /// <summary>The reward of prompt + text by <paramref name="head"/> on a fresh decoder of the node's model (prefill, no HTTP).</summary>
    private float Independent(string text, Func<ModelConfig, DecoderModel, RewardHead> head)
    {
        var host = node.Server.Services.GetRequiredService<ModelHost>();
        using var dec = new BatchDecoder(host.Model, 1);
        var seq = dec.TryAllocate()!;
        using var h = head(host.Config, host.Model);
        dec.SetRewardHead(seq, h);
        dec.Prefill(seq, host.Tokenizer.Encode("<|endoftext|>The cat" + text));
        return seq.Reward;
    }

    [Fact]
    public async Task StoreHead_ReportsTheRewardOfTheSameHeadLoadedFromItsFolder()
    {
        await node.PublishAsync("acme", "pos", HeadFiles.Folder(DemoHead));
        var (status, json, key) = await SendAsync(Completion("acme", new { reward_head = "pos" }));
        Assert.True(status == HttpStatusCode.OK, json.ToJsonString());
        Assert.Equal("acme/pos@1", key);
        var choice = json["choices"]![0]!;
        var expected = Independent(choice["text"]!.GetValue<string>(), (c, m) => new RewardHead(RewardHeadReader.ReadFolder(DemoHead, c), m, "folder"));
        Assert.InRange(Math.Abs(choice["reward"]!.GetValue<float>() - expected), 0, 1e-3);
    }

    [Theory]
    [InlineData("other", "acme/secret")]
    [InlineData("other", "secret")]
    [InlineData(null, "acme/secret")]
    [InlineData("acme", "other/secret")]
    public async Task AnotherTenantsHead_IsNotFound(string? caller, string name)
    {
        await node.PublishAsync("acme", "secret", HeadFiles.Random(192, seed: 5));
        await node.PublishAsync("public", "shared", HeadFiles.Random(192, seed: 6));
        var (status, json, _) = await SendAsync(Completion(caller, new { reward_head = name }));
        Assert.Equal(HttpStatusCode.NotFound, status);
        Assert.Equal(("reward_head_not_found", "reward_head"), (json["error"]!["code"]!.GetValue<string>(), json["error"]!["param"]!.GetValue<string>()));
        // public's heads are every tenant's.
        var shared = await SendAsync(Completion(caller, new { reward_head = "shared" }));
        Assert.Equal(HttpStatusCode.OK, shared.Status);
        Assert.StartsWith("public/shared@", shared.Head);
    }

    [Fact]
    public async Task ConcurrentFirstUses_LoadTheHeadOnce()
    {
        await node.PublishAsync("acme", "fresh", HeadFiles.Random(192, seed: 7));
        var results = await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => SendAsync(Completion("acme", new { reward_head = "fresh" }, maxTokens: 2))));
        Assert.All(results, r => Assert.Equal((HttpStatusCode.OK, "acme/fresh@1"), (r.Status, r.Head)));
        Assert.Equal(1, node.Counting.Reads["acme/fresh"]);
    }

    [Fact]
    public async Task Republish_IsSeenThroughTheEvent_TheNextRequestScoresWithIt_ThenDelete404()
    {
        var source = node.Server.Services.GetRequiredService<StoreRewardHeadSource>();
        await node.PublishAsync("acme", "moving", HeadFiles.Random(192, seed: 8));
        var v1 = await SendAsync(Completion("acme", new { reward_head = "moving" }));
        Assert.Equal("acme/moving@1", v1.Head);

        // Version 2: the output bias +5, so with sum pooling every scored position adds 5.
        var clock = Stopwatch.StartNew();
        await node.PublishAsync("acme", "moving", HeadFiles.Random(192, seed: 8, biasShift: 5));
        // The node drops its copy when the store's event arrives: cached heads are otherwise re-checked only after 30 s,
        // so seeing it within this 10 s bound proves the event path.
        await WaitAsync(() => !source.Cached.Contains("acme/moving@1"), TimeSpan.FromSeconds(10));
        var seenAfter = clock.Elapsed;
        var v2 = await SendAsync(Completion("acme", new { reward_head = "moving" }));
        output.WriteLine($"republish seen by the node {seenAfter.TotalMilliseconds:F0} ms after the upload returned; first request on v2 done after {clock.ElapsedMilliseconds} ms");
        Assert.Equal("acme/moving@2", v2.Head);
        Assert.Equal(v1.Json["choices"]![0]!["text"]!.GetValue<string>(), v2.Json["choices"]![0]!["text"]!.GetValue<string>());
        var positions = v1.Json["usage"]!["prompt_tokens"]!.GetValue<int>() + v1.Json["usage"]!["completion_tokens"]!.GetValue<int>();
        var shift = v2.Json["choices"]![0]!["reward"]!.GetValue<float>() - v1.Json["choices"]![0]!["reward"]!.GetValue<float>();
        Assert.InRange(shift, 5 * positions - 0.05, 5 * positions + 0.05);

        Assert.True(await node.Store.DeleteAsync("acme", "moving", null, CancellationToken.None));
        await WaitAsync(() => !source.Cached.Contains("acme/moving@2"), TimeSpan.FromSeconds(10));
        var gone = await SendAsync(Completion("acme", new { reward_head = "moving" }));
        Assert.Equal(HttpStatusCode.NotFound, gone.Status);
        Assert.Equal("reward_head_not_found", gone.Json["error"]!["code"]!.GetValue<string>());
    }

    [Fact]
    public async Task RunningStream_KeepsTheHeadItStartedWith_AcrossARepublish()
    {
        var source = node.Server.Services.GetRequiredService<StoreRewardHeadSource>();
        await node.PublishAsync("acme", "steady", HeadFiles.Random(192, seed: 9));
        var request = Completion("acme", new { reward_head = "steady", stream = true }, maxTokens: 300);
        using var response = await node.Server.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("acme/steady@1", response.Headers.GetValues("X-Serving-Reward-Head").Single());
        var events = new List<Http.SseEvent>();
        await using var e = Http.Sse.ReadAsync(response).GetAsyncEnumerator();
        Assert.True(await e.MoveNextAsync());
        events.Add(e.Current);
        // Mid-stream: version 2 replaces it in the store and in the node's cache.
        await node.PublishAsync("acme", "steady", HeadFiles.Random(192, seed: 9, biasShift: 5));
        await WaitAsync(() => !source.Cached.Contains("acme/steady@1"), TimeSpan.FromSeconds(10));
        while (await e.MoveNextAsync()) events.Add(e.Current);
        var last = events.Last(x => x.Data != "[DONE]" && x.Json["choices"]!.AsArray().Count > 0 && x.Json["choices"]![0]!["reward"] is not null);

        // The same request, greedy, with version 1's files under another name: the stream's reward is version 1's
        // (version 2 would add 5 per scored position).
        await node.PublishAsync("acme", "steady-v1", HeadFiles.Random(192, seed: 9));
        var reference = await SendAsync(Completion("acme", new { reward_head = "steady-v1" }, maxTokens: 300));
        Assert.Equal(reference.Json["choices"]![0]!["text"]!.GetValue<string>(), Http.Sse.Text(events));
        var expected = reference.Json["choices"]![0]!["reward"]!.GetValue<float>();
        Assert.InRange(Math.Abs(last.Json["choices"]![0]!["reward"]!.GetValue<float>() - expected), 0, 1e-3 * Math.Max(1, Math.Abs(expected)));
    }

    [Fact]
    public async Task OtterHead_FromTheStore_ScoresLikeTheSameFilesLoadedDirectly_AndSurvivesARepublish()
    {
        var files = OtterFiles.Random(node.Config, seed: 11);
        var meta = (await node.PublishAsync("acme", "otter", files)).Head;
        Assert.Equal(("otter-side-network", "side_stream"), (meta.Kind, meta.Input));
        var (status, json, key) = await SendAsync(Completion("acme", new { reward_head = "otter" }));
        Assert.True(status == HttpStatusCode.OK, json.ToJsonString());
        Assert.Equal("acme/otter@1", key);
        var text = json["choices"]![0]!["text"]!.GetValue<string>();
        var expected = Independent(text, (c, m) => new RewardHead(OtterReader.Read(files.ConfigJson, files.Tensors, c), m, "direct"));
        Assert.InRange(Math.Abs(json["choices"]![0]!["reward"]!.GetValue<float>() - expected), 0, 1e-3 * Math.Max(1, Math.Abs(expected)));

        // A second version replaces the first; the first one's sessions stay alive for the decoder until the node stops.
        var source = node.Server.Services.GetRequiredService<StoreRewardHeadSource>();
        await node.PublishAsync("acme", "otter", OtterFiles.Random(node.Config, seed: 12));
        await WaitAsync(() => !source.Cached.Contains("acme/otter@1"), TimeSpan.FromSeconds(10));
        var again = await SendAsync(Completion("acme", new { reward_head = "otter" }));
        Assert.Equal((HttpStatusCode.OK, "acme/otter@2"), (again.Status, again.Head));
        var plain = await SendAsync(Completion("acme", new { }));
        Assert.Equal(text, plain.Json["choices"]![0]!["text"]!.GetValue<string>());
    }

    [Fact]
    public async Task DefaultHead_FromTheStore_IsResolvedOnUse()
    {
        await using var second = await node.StartNodeAsync(new() { ["Node:DefaultRewardHead"] = "public/later" });
        object body = new { model = "demo", messages = new[] { new { role = "user", content = "Hi" } }, max_tokens = 4, alignment = new { method = "best_of_n", n = 2 } };
        using (var missing = await second.Http.PostAsJsonAsync("v1/chat/completions", body))
        {
            Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
            Assert.Contains("default reward head", await missing.Content.ReadAsStringAsync());
        }
        await node.PublishAsync("public", "later", HeadFiles.Folder(DemoHead));
        using var ok = await second.Http.PostAsJsonAsync("v1/chat/completions", body);
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        Assert.Equal("public/later@1", ok.Headers.GetValues("X-Serving-Reward-Head").Single());
    }

    private static async Task WaitAsync(Func<bool> condition, TimeSpan bound)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            if (clock.Elapsed > bound) throw new TimeoutException($"condition not met within {bound.TotalSeconds} s");
            await Task.Delay(10);
        }
    }
}

/// <summary>A random Otter side network for a Llama-family base, in the format of <c>models/demo/otter</c> (files in memory).</summary>
internal static class OtterFiles
{
    public static RewardHeadFiles Random(ModelConfig c, int seed, int side = 8, int heads = 2, int ffn = 8)
    {
        var rng = new Random(seed);
        float[] Rand(long n, double scale) => Enumerable.Range(0, (int)n).Select(_ => (float)((rng.NextDouble() * 2 - 1) * scale)).ToArray();
        int d = c.HiddenSize, hd = c.HeadDim, q = heads * hd;
        var entries = new List<SafetensorsWriter.Entry>();
        var layers = new JsonArray();
        for (var l = 0; l < c.NumLayers; l++)
        {
            JsonObject P(string name, int rows, int cols)
            {
                entries.Add(SafetensorsWriter.Entry.F32($"layers.{l}.{name}.weight", [rows, cols], Rand(rows * cols, 0.3)));
                return new JsonObject { ["weight"] = $"layers.{l}.{name}.weight" };
            }
            layers.Add(new JsonObject
            {
                ["input_norm"] = $"model.layers.{l}.input_layernorm.weight",
                ["q_proj"] = P("q_proj", q, d), ["k_proj"] = P("k_proj", q, d), ["v_proj"] = P("v_proj", q, d), ["o_proj"] = P("o_proj", side, q),
                ["gate_proj"] = P("gate_proj", ffn, d), ["up_proj"] = P("up_proj", ffn, d), ["down_proj"] = P("down_proj", side, ffn),
            });
        }
        entries.Add(SafetensorsWriter.Entry.F32("norm.weight", [side], Rand(side, 0.5).Select(x => 1 + x).ToArray()));
        entries.Add(SafetensorsWriter.Entry.F32("head.layers.0.weight", [4, side], Rand(4 * side, 0.4)));
        entries.Add(SafetensorsWriter.Entry.F32("head.layers.0.bias", [4], Rand(4, 0.1)));
        entries.Add(SafetensorsWriter.Entry.F32("head.layers.1.weight", [1, 4], Rand(4, 0.5)));
        var config = new JsonObject
        {
            ["kind"] = "otter-side-network", ["base_model"] = StoreHeadNode.Base, ["num_hidden_layers"] = c.NumLayers, ["hidden_size"] = d,
            ["side_size"] = side, ["num_heads"] = heads, ["num_key_value_heads"] = heads, ["head_dim"] = hd, ["intermediate_size"] = ffn,
            ["rms_norm_eps"] = c.NormEps, ["rope"] = new JsonObject { ["theta"] = c.RopeTheta }, ["layers"] = layers,
            ["head"] = new JsonObject
            {
                ["norm"] = new JsonObject { ["weight"] = "norm.weight" },
                ["layers"] = new JsonArray(
                    new JsonObject { ["weight"] = "head.layers.0.weight", ["bias"] = "head.layers.0.bias" },
                    new JsonObject { ["weight"] = "head.layers.1.weight" }),
                ["activation"] = "tanh",
            },
            ["pooling"] = "sum",
        };
        return new RewardHeadFiles(JsonSerializer.SerializeToUtf8Bytes(config), SafetensorsWriter.ToBytes(entries), RewardHeadFiles.OtterTensorsName);
    }
}
