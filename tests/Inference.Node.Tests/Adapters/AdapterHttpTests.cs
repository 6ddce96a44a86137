using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Text.Json.Nodes;
using Microsoft.Extensions.DependencyInjection;
using Serving.AdapterStore;
using Serving.AdapterStore.Compression;
using Serving.AdapterStore.Ingest;
using Serving.AdapterStore.Peft;
using Serving.AdapterStore.Storage;
using Serving.AdapterStore.Tests.Peft;
using Serving.Checkpoints;
using Serving.Inference.Node.Adapters;
using Serving.Inference.Node.Hosting;
using Serving.Inference.Node.Tests.Http;
using Serving.Inference.Tests.Reference;
using StackExchange.Redis;
using Xunit;

namespace Serving.Inference.Node.Tests.Adapters;

/// <summary>An embedded Garnet with adapters published through the store's ingest, and a node reading them (S = 4 slots).</summary>
public sealed class AdapterNodeFixture : IAsyncLifetime
{
    public const string Base = "slow";
    public EmbeddedGarnet Garnet { get; private set; } = null!;
    public ConnectionMultiplexer Redis { get; private set; } = null!;
    public RedisAdapterStore Store { get; private set; } = null!;
    public NodeServer Server { get; private set; } = null!;
    public string Dir => Models.SlowGpt2;
    public ModelConfig Config { get; private set; } = null!;
    private AdapterIngestor _ingestor = null!;

    public async Task InitializeAsync()
    {
        Garnet = new EmbeddedGarnet(memory: "256m");
        Redis = await ConnectionMultiplexer.ConnectAsync(Garnet.ConnectionString);
        Store = new RedisAdapterStore(Redis, new AdapterStoreOptions());
        Config = ModelConfig.Load(Path.Combine(Dir, "config.json"));
        _ingestor = new AdapterIngestor(Store, new StaticBaseModelCatalog().Add(Base, Config));
        await PublishAsync("public", "a", seed: 1, rank: 8);
        await PublishAsync("public", "b", seed: 2, rank: 4);
        await PublishAsync("acme", "c", seed: 3, rank: 4);
        for (var i = 0; i < 20; i++) await PublishAsync("public", $"z{i:00}", seed: 100 + i, rank: 2);
        Server = await StartNodeAsync(Garnet.ConnectionString);
    }

    public Task<NodeServer> StartNodeAsync(string redis, Action<IServiceCollection>? services = null, Dictionary<string, string?>? extra = null)
    {
        var settings = new Dictionary<string, string?>
        {
            ["Node:ModelPath"] = Dir,
            ["Node:ModelId"] = Base,
            ["Node:Redis"] = redis,
            ["Node:AdapterSlots"] = "4",
            ["Node:MaxBatch"] = "24",
            ["Node:MaxQueue"] = "128",
        };
        foreach (var (k, v) in extra ?? []) settings[k] = v;
        return NodeServer.StartAsync(settings, services);
    }

    /// <summary>A GPT-2 LoRA on every module strong enough to change greedy outputs.</summary>
    internal static PeftFolder Lora(BaseModelShape shape, int seed, int rank)
    {
        var rng = new Random(seed);
        var list = new List<(string, long[], float[])>();
        for (var l = 0; l < shape.NumLayers; l++)
        {
            foreach (var module in shape.Modules)
            {
                var (i, o) = shape.Widths(module)!.Value;
                var p = $"base_model.model.transformer.h.{l}.{module}";
                list.Add(($"{p}.lora_A.weight", [rank, i], PeftFolders.Random(rng, rank * i, 0.3)));
                list.Add(($"{p}.lora_B.weight", [o, rank], PeftFolders.Random(rng, o * rank, 0.3)));
            }
        }
        return PeftFolders.Build(PeftFolders.LoraConfig("gpt2", rank, rank, new[] { "c_attn", "c_proj", "c_fc" }, fanInFanOut: true), list);
    }

    public async Task<AdapterMetadata> PublishAsync(string tenant, string name, int seed, int rank)
    {
        var folder = Lora(BaseModelShape.FromConfig(Config), seed, rank);
        var report = await _ingestor.IngestAsync(new UploadRequest(tenant, name, Base, new PeftFiles(folder.ConfigBytes, folder.Safetensors),
            new CodecOptions { Codec = AdapterCodec.Lossless }, false), CancellationToken.None);
        return report.Metadata;
    }

    public async Task DisposeAsync()
    {
        await Server.DisposeAsync();
        await Redis.DisposeAsync();
        Garnet.Dispose();
    }
}

/// <summary>Adapters over real HTTP from a real store (embedded Garnet): names, tenants, merges, versions, tiers, metrics.</summary>
public sealed class AdapterHttpTests(AdapterNodeFixture fx) : IClassFixture<AdapterNodeFixture>
{
    private HttpClient Http => fx.Server.Http;

    private static readonly int[] Prompt = [5, 80, 17, 201, 33];

    private static object Completion(string model, int maxTokens = 16, object? extra = null)
    {
        var body = new JsonObject
        {
            ["model"] = model, ["prompt"] = new JsonArray([.. Prompt.Select(t => JsonValue.Create(t))]), ["max_tokens"] = maxTokens,
            ["temperature"] = 0, ["ignore_eos"] = true,
        };
        if (extra is not null)
        {
            foreach (var (k, v) in JsonSerializerNode(extra)) body[k] = v?.DeepClone();
        }
        return body;
    }

    private static JsonObject JsonSerializerNode(object o) => System.Text.Json.JsonSerializer.SerializeToNode(o)!.AsObject();

    private static HttpRequestMessage Post(object body, string? tenant = null)
    {
        var request = Sse.Post("v1/completions", body);
        if (tenant is not null) request.Headers.Add("X-Serving-Tenant", tenant);
        return request;
    }

    private async Task<(HttpStatusCode Status, JsonObject Body, string? Adapter)> SendAsync(object body, string? tenant = null, HttpClient? http = null)
    {
        using var response = await (http ?? Http).SendAsync(Post(body, tenant));
        var json = await Sse.JsonAsync(response);
        return (response.StatusCode, json, response.Headers.TryGetValues("X-Serving-Adapter", out var v) ? v.Single() : null);
    }

    private async Task<string> TextAsync(string model, int maxTokens = 16, string? tenant = null)
    {
        var (status, body, _) = await SendAsync(Completion(model, maxTokens), tenant);
        Assert.True(status == HttpStatusCode.OK, $"{model}: {status} {body}");
        return (string)body["choices"]![0]!["text"]!;
    }

    [Fact]
    public async Task BaseAndTwoAdapters_Concurrently_EachGetsItsSoloTokens()
    {
        string[] models = ["slow", "slow:public/a", "slow:public/b"];
        var solo = new Dictionary<string, string>();
        foreach (var m in models) solo[m] = await TextAsync(m, 24);
        Assert.NotEqual(solo["slow"], solo["slow:public/a"]);
        Assert.NotEqual(solo["slow:public/a"], solo["slow:public/b"]);
        Assert.NotEqual(solo["slow"], solo["slow:public/b"]);

        var runs = Enumerable.Range(0, 9).Select(i => models[i % 3]).Select(async m => (m, await TextAsync(m, 24))).ToList();
        foreach (var (m, text) in await Task.WhenAll(runs)) Assert.Equal(solo[m], text);

        // base:name means the caller's tenant (public without the header), and the header names the version served.
        var (_, echoed, adapter) = await SendAsync(Completion("slow:a", 2));
        Assert.Equal("public/a@1", adapter);
        Assert.Equal("slow:a", (string)echoed["model"]!); // the response names the model as asked, like OpenAI's
        var (_, baseBody, _) = await SendAsync(Completion("slow", 2));
        Assert.Equal("slow", (string)baseBody["model"]!);
        Assert.Equal(solo["slow:public/a"], await TextAsync("slow:a", 24));
    }

    [Theory]
    [InlineData("slow:public/nope", null)]
    [InlineData("slow:acme/c", null)]          // another tenant's adapter without the header
    [InlineData("slow:acme/c", "globex")]      // ... or for another tenant
    [InlineData("slow:globex/c", "acme")]
    [InlineData("slow:Bad Name", null)]
    [InlineData("nope", "acme")]
    public async Task UnknownOrInvisibleAdapter_404ModelNotFound(string model, string? tenant)
    {
        var (status, body, _) = await SendAsync(Completion(model, 2), tenant);
        Assert.Equal(HttpStatusCode.NotFound, status);
        Assert.Equal("model_not_found", (string)body["error"]!["code"]!);
        Assert.Equal("model", (string)body["error"]!["param"]!);
        Assert.Contains(model, (string)body["error"]!["message"]!);
    }

    [Fact]
    public async Task TenantAdapter_ByFullIdShortNameOrAlone_WithTheTenantHeader()
    {
        var full = await TextAsync("slow:acme/c", 8, tenant: "acme");
        Assert.Equal(full, await TextAsync("slow:c", 8, tenant: "acme"));
        Assert.Equal(full, await TextAsync("c", 8, tenant: "acme"));
        Assert.Equal(await TextAsync("slow:public/a", 8), await TextAsync("slow:public/a", 8, tenant: "acme"));
    }

    [Fact]
    public async Task Merge_EqualsTheFloat64ReferenceOfTheWeightedSum()
    {
        var a = (await fx.Store.LoadAdapterAsync("public", "a", null, CancellationToken.None))!.Value.Adapter;
        var b = (await fx.Store.LoadAdapterAsync("public", "b", null, CancellationToken.None))!.Value.Adapter;
        var reference = new ReferenceModel(fx.Dir, AdapterPipelineTests.MergedDeltas(fx.Config, (a, 0.5), (b, -0.75)));
        var tokens = Prompt.ToList();
        var expectedLogprobs = new List<double>();
        for (var i = 0; i < 6; i++)
        {
            var logits = reference.Forward(tokens).Logits[^1];
            var next = AdapterPipelineTests.ArgMax(logits);
            var max = logits.Max();
            expectedLogprobs.Add(logits[next] - max - Math.Log(logits.Sum(x => Math.Exp(x - max))));
            tokens.Add(next);
        }
        var host = fx.Server.Services.GetRequiredService<ModelHost>();
        var expectedText = host.Tokenizer.Decode(tokens.Skip(Prompt.Length).ToArray(), skipSpecialTokens: true);

        var merge = new { merged_adapters = new { ids = new[] { "public/a", "slow:public/b" }, weights = new[] { 0.5, -0.75 }, merge_strategy = "linear" }, logprobs = 0 };
        var (status, body, key) = await SendAsync(Completion("slow", 6, merge));
        Assert.True(status == HttpStatusCode.OK, body.ToJsonString());
        Assert.Equal("merge:linear(public/a@1*0.5,public/b@1*-0.75)", key);
        Assert.Equal(expectedText, (string)body["choices"]![0]!["text"]!);
        var logprobs = body["choices"]![0]!["logprobs"]!["token_logprobs"]!.AsArray().Select(x => (double)x!).ToList();
        for (var i = 0; i < expectedLogprobs.Count; i++) Assert.True(Math.Abs(expectedLogprobs[i] - logprobs[i]) < 1e-4, $"token {i}: {logprobs[i]} vs {expectedLogprobs[i]}");
        // The merge is neither part alone.
        Assert.NotEqual(await TextAsync("slow:public/a", 6), (string)body["choices"]![0]!["text"]!);
    }

    [Theory]
    [InlineData("""{"ids": ["public/a"], "weights": [1, 2]}""", "merged_adapters.weights")]
    [InlineData("""{"ids": [], "weights": []}""", "merged_adapters.ids")]
    [InlineData("""{"ids": ["public/a", "public/b"], "weights": [0.5, 0.5], "merge_strategy": "ties"}""", "merged_adapters.merge_strategy")]
    [InlineData("""{"ids": ["public/a"], "weights": [1e300]}""", "merged_adapters.weights[0]")]
    public async Task BadMerge_400NamingTheParam(string merge, string param)
    {
        var body = (JsonObject)Completion("slow", 2);
        body["merged_adapters"] = JsonNode.Parse(merge);
        var (status, error, _) = await SendAsync(body);
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal(param, (string)error["error"]!["param"]!);
    }

    [Fact]
    public async Task MergeWithAnUnknownPart_404NamingTheId_AndMergeWithAnAdapterModel_400()
    {
        var body = (JsonObject)Completion("slow", 2);
        body["merged_adapters"] = JsonNode.Parse("""{"ids": ["public/a", "public/nope"], "weights": [1, 1]}""");
        var (status, error, _) = await SendAsync(body);
        Assert.Equal(HttpStatusCode.NotFound, status);
        Assert.Equal("merged_adapters.ids[1]", (string)error["error"]!["param"]!);

        body["model"] = "slow:public/a";
        (status, error, _) = await SendAsync(body);
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("merged_adapters", (string)error["error"]!["param"]!);
    }

    [Fact]
    public async Task Models_ListBaseAndTheAdaptersTheCallerMayUse()
    {
        async Task<List<string>> Ids(string? tenant)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "v1/models");
            if (tenant is not null) request.Headers.Add("X-Serving-Tenant", tenant);
            using var response = await Http.SendAsync(request);
            var json = await Sse.JsonAsync(response);
            Assert.Equal("list", (string)json["object"]!);
            return [.. json["data"]!.AsArray().Select(m => (string)m!["id"]!)];
        }

        var anonymous = await Ids(null);
        Assert.Equal("slow", anonymous[0]);
        Assert.Contains("slow:public/a", anonymous);
        Assert.Contains("slow:public/z19", anonymous);
        Assert.DoesNotContain("slow:acme/c", anonymous);
        var acme = await Ids("acme");
        Assert.Contains("slow:acme/c", acme);
        Assert.Contains("slow:public/b", acme);
        Assert.DoesNotContain("slow:acme/c", await Ids("globex"));

        using var one = new HttpRequestMessage(HttpMethod.Get, "v1/models/slow:acme/c");
        one.Headers.Add("X-Serving-Tenant", "acme");
        using var found = await Http.SendAsync(one);
        Assert.Equal(HttpStatusCode.OK, found.StatusCode);
        Assert.Equal("slow", (string)(await Sse.JsonAsync(found))["parent"]!);
        Assert.Equal(HttpStatusCode.NotFound, (await Http.GetAsync("v1/models/slow:acme/c")).StatusCode);
    }

    [Fact]
    public async Task FourSlotsTwentyAdapters_EveryRequestCompletes()
    {
        var runs = Enumerable.Range(0, 40).Select(async i =>
        {
            var model = $"slow:public/z{i % 20:00}";
            var (status, body, key) = await SendAsync(Completion(model, 12));
            Assert.True(status == HttpStatusCode.OK, $"{model}: {status} {body}");
            Assert.Equal(12, (int)body["usage"]!["completion_tokens"]!);
            Assert.Equal($"public/z{i % 20:00}@1", key);
            return (model, (string)body["choices"]![0]!["text"]!);
        }).ToList();
        var results = await Task.WhenAll(runs);
        // Each adapter's two requests agree (greedy), whatever slot they got.
        foreach (var g in results.GroupBy(r => r.model)) Assert.Single(g.Select(r => r.Item2).Distinct());
        var status = JsonNode.Parse(await Http.GetStringAsync("node/status"))!["adapters"]!;
        Assert.Equal(4, (int)status["slots"]!);
        Assert.True(status["device"]!.AsArray().Count <= 4);
    }

    [Fact]
    public async Task PinPrefetchStatusAndMetrics()
    {
        using var pin = await Http.PostAsync("node/adapters/public/z05/pin", null);
        Assert.Equal(HttpStatusCode.OK, pin.StatusCode);
        Assert.Equal("public/z05@1", (string)(await Sse.JsonAsync(pin))["key"]!);
        var status = JsonNode.Parse(await Http.GetStringAsync("node/status"))!["adapters"]!;
        Assert.Contains("public/z05", status["pinned"]!.AsArray().Select(x => (string)x!));
        Assert.Contains("public/z05", status["host"]!.AsArray().Concat(status["device"]!.AsArray()).Select(x => (string)x!));
        Assert.Equal(HttpStatusCode.NoContent, (await Http.DeleteAsync("node/adapters/public/z05/pin")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await Http.DeleteAsync("node/adapters/public/z05/pin")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Http.PostAsync("node/adapters/acme/c/prefetch", null)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await Http.PostAsync("node/adapters/public/nope/prefetch", null)).StatusCode);

        await TextAsync("slow:public/a", 4);
        await TextAsync("slow:public/a", 4);
        var device = JsonNode.Parse(await Http.GetStringAsync("node/status"))!["adapters"]!["device"]!.AsArray().Select(x => (string)x!);
        Assert.Contains("public/a", device);
        // The scheduler counts a request as finished right after its last event: poll briefly.
        var metrics = "";
        for (var i = 0; i < 50 && !metrics.Contains("adapter=\"public/a\"", StringComparison.Ordinal); i++)
        {
            metrics = await Http.GetStringAsync("metrics");
            await Task.Delay(20);
        }
        Assert.Matches("serving_node_adapter_lookups_total\\{[^}]*result=\"hit\"[^}]*tier=\"host\"", metrics);
        Assert.Matches("serving_node_adapter_lookups_total\\{[^}]*result=\"miss\"[^}]*tier=\"slot\"", metrics);
        Assert.Contains("serving_node_adapter_load_time_seconds_bucket", metrics);
        Assert.Contains("serving_node_adapter_activation_time_seconds_bucket", metrics);
        Assert.True(System.Text.RegularExpressions.Regex.IsMatch(metrics, "serving_node_adapter_requests_total\\{[^}]*adapter=\"public/a\""),
            string.Join("\n", metrics.Split('\n').Where(l => l.Contains("adapter", StringComparison.Ordinal))));
        Assert.Matches("serving_node_adapter_generation_tokens_total\\{[^}]*adapter=\"public/a\"", metrics);
        Assert.Matches("serving_node_adapters\\{[^}]*tier=\"device\"", metrics);
    }

    [Fact]
    public async Task Republish_NewRequestsGetV2ByTheStoreEvent_RunningStreamKeepsV1()
    {
        await fx.PublishAsync("public", "r", seed: 40, rank: 4);
        await RunWhileChangingAsync("r", async () => await fx.PublishAsync("public", "r", seed: 41, rank: 4),
            (status, key) => status == HttpStatusCode.OK && key == "public/r@2");
    }

    [Fact]
    public async Task Delete_NewRequestsGet404ByTheStoreEvent_RunningStreamKeepsV1()
    {
        await fx.PublishAsync("public", "d", seed: 50, rank: 4);
        await RunWhileChangingAsync("d", async () => await fx.Store.DeleteAsync("public", "d", null, CancellationToken.None),
            (status, _) => status == HttpStatusCode.NotFound);
    }

    private async Task RunWhileChangingAsync(string name, Func<Task> change, Func<HttpStatusCode, string?, bool> changed)
    {
        var model = $"slow:public/{name}";
        const int longTokens = 1500;
        var solo = await TextAsync(model, longTokens);
        // The node maps name -> version when this request arrives and keeps the mapping for MappingTtl unless a store
        // event drops it: a change seen before MappingTtl has passed since this moment can only be the event's work.
        // (No guess at how fast the event arrives: on an idle machine it is milliseconds, on a loaded one longer.)
        var sinceMapped = Stopwatch.StartNew();
        using var stream = await Http.SendAsync(Post(Completion(model, longTokens, new { stream = true })), HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal($"public/{name}@1", stream.Headers.GetValues("X-Serving-Adapter").Single());
        var events = Sse.ReadAllAsync(stream);
        await Task.Delay(100);
        Assert.False(events.IsCompleted, "the long stream ended before the change; make it longer");

        await change();
        var watch = Stopwatch.StartNew();
        while (true)
        {
            var (status, _, key) = await SendAsync(Completion(model, 1));
            if (changed(status, key)) break;
            Assert.True(sinceMapped.Elapsed < AdapterManager.MappingTtl, $"still {status} {key} {watch.Elapsed.TotalSeconds:F1} s after the change: no store event reached the node");
            await Task.Delay(20);
        }
        Assert.True(sinceMapped.Elapsed < AdapterManager.MappingTtl, $"the change was seen {watch.Elapsed.TotalSeconds:F1} s after it, when the mapping could have expired anyway");
        Assert.False(events.IsCompleted, "the long stream ended before the change was observed; make it longer");
        Assert.Equal(solo, Sse.Text(await events));
    }

    [Fact]
    public async Task ConcurrentFirstRequests_LoadTheAdapterOnce()
    {
        await fx.PublishAsync("public", "sf", seed: 60, rank: 4);
        var counting = new CountingStore(new RedisAdapterStore(fx.Redis, new AdapterStoreOptions()));
        await using var node = await fx.StartNodeAsync(fx.Garnet.ConnectionString, s => s.AddSingleton<IAdapterStore>(counting));
        var runs = Enumerable.Range(0, 12).Select(_ => SendAsync(Completion("slow:public/sf", 2), http: node.Http)).ToList();
        foreach (var (status, body, _) in await Task.WhenAll(runs)) Assert.True(status == HttpStatusCode.OK, body.ToJsonString());
        Assert.Equal(1, counting.Reads.GetValueOrDefault("public/sf"));
    }

    [Fact]
    public async Task HostCache_EvictsLeastRecentlyUsedByBytes_NeverThePinned()
    {
        // Rank-64 adapters of this model take ~3 MiB each; the budget holds one.
        foreach (var n in new[] { "big1", "big2", "big3" }) await fx.PublishAsync("public", n, seed: n[^1], rank: 64);
        await using var node = await fx.StartNodeAsync(fx.Garnet.ConnectionString, null, new() { ["Node:AdapterHostCacheMiB"] = "4" });
        async Task<JsonNode> Tiers() => JsonNode.Parse(await node.Http.GetStringAsync("node/status"))!["adapters"]!;
        Assert.Equal(HttpStatusCode.OK, (await node.Http.PostAsync("node/adapters/public/big1/pin", null)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await node.Http.PostAsync("node/adapters/public/big2/prefetch", null)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await node.Http.PostAsync("node/adapters/public/big3/prefetch", null)).StatusCode);
        var tiers = await Tiers();
        Assert.Equal(["public/big1", "public/big3"], tiers["host"]!.AsArray().Select(x => (string)x!));
        Assert.True((long)tiers["host_bytes"]! > 4L << 20, "pinned plus the newest entry may exceed the budget");

        // Unpinned, big1 is the least recently used and goes at the next insertion.
        Assert.Equal(HttpStatusCode.NoContent, (await node.Http.DeleteAsync("node/adapters/public/big1/pin")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await node.Http.PostAsync("node/adapters/public/big2/prefetch", null)).StatusCode);
        Assert.Equal(["public/big2"], (await Tiers())["host"]!.AsArray().Select(x => (string)x!));
    }

    [Fact]
    public async Task StoreUnreachable_503WithRetryAfter()
    {
        await using var node = await fx.StartNodeAsync($"127.0.0.1:{EmbeddedGarnet.FreePort()},connectTimeout=300,asyncTimeout=500,syncTimeout=500");
        using var response = await node.Http.SendAsync(Post(Completion("slow:public/a", 2)));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Equal("store_unavailable", (string)(await Sse.JsonAsync(response))["error"]!["code"]!);
        Assert.True(response.Headers.RetryAfter?.Delta > TimeSpan.Zero);
        // The base model is still served.
        using var baseResponse = await node.Http.SendAsync(Post(Completion("slow", 2)));
        Assert.Equal(HttpStatusCode.OK, baseResponse.StatusCode);
    }

    /// <summary>Counts payload reads per adapter.</summary>
    private sealed class CountingStore(IAdapterStore inner) : IAdapterStore
    {
        public ConcurrentDictionary<string, int> Reads { get; } = new();
        public Task<AdapterMetadata> PublishAsync(AdapterMetadata draft, byte[] container, byte[]? original, CancellationToken ct) => inner.PublishAsync(draft, container, original, ct);
        public Task<AdapterMetadata?> GetMetadataAsync(string tenant, string name, long? version, CancellationToken ct) => inner.GetMetadataAsync(tenant, name, version, ct);
        public Task<IReadOnlyList<AdapterMetadata>> ListAsync(string tenant, CancellationToken ct) => inner.ListAsync(tenant, ct);
        public Task<IReadOnlyList<AdapterMetadata>> ListVersionsAsync(string tenant, string name, CancellationToken ct) => inner.ListVersionsAsync(tenant, name, ct);
        public Task<StoredAdapter?> ReadAsync(string tenant, string name, long? version, CancellationToken ct)
        {
            Reads.AddOrUpdate($"{tenant}/{name}", 1, (_, n) => n + 1);
            return inner.ReadAsync(tenant, name, version, ct);
        }
        public Task<byte[]?> ReadOriginalAsync(string tenant, string name, long version, CancellationToken ct) => inner.ReadOriginalAsync(tenant, name, version, ct);
        public Task<bool> DeleteAsync(string tenant, string name, long? version, CancellationToken ct) => inner.DeleteAsync(tenant, name, version, ct);
        public Task<IAsyncDisposable> SubscribeAsync(Action<AdapterEvent> handler, CancellationToken ct) => inner.SubscribeAsync(handler, ct);
    }
}

/// <summary><c>Node:AdapterDirectory</c> with the demo model's eight real PEFT adapters (no Redis).</summary>
public sealed class AdapterDirectoryTests
{
    private static string Repo()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Serving.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("repository root not found");
    }

    [Fact]
    public async Task DemoAdapters_ServedAsPublic_AndChangeTheOutput()
    {
        var demo = Path.Combine(Repo(), "models", "demo");
        await using var node = await NodeServer.StartAsync(new Dictionary<string, string?>
        {
            ["Node:ModelPath"] = demo,
            ["Node:ModelId"] = "demo",
            ["Node:MaxContext"] = "256",
            ["Node:AdapterDirectory"] = Path.Combine(demo, "adapters"),
        });
        var models = (await Sse.JsonAsync(await node.Http.GetAsync("v1/models")))["data"]!.AsArray().Select(m => (string)m!["id"]!).ToList();
        var expected = Directory.GetDirectories(Path.Combine(demo, "adapters")).Select(d => "demo:public/" + Path.GetFileName(d));
        Assert.Equal(expected.Order(), models.Skip(1).Order());

        async Task<string> Text(string model)
        {
            using var response = await node.Http.SendAsync(Sse.Post("v1/chat/completions",
                new { model, messages = new[] { new { role = "user", content = "Tell me about the weather." } }, max_tokens = 16, temperature = 0 }));
            var json = await Sse.JsonAsync(response);
            Assert.True(response.StatusCode == HttpStatusCode.OK, json.ToJsonString());
            return (string)json["choices"]![0]!["message"]!["content"]!;
        }

        var baseText = await Text("demo");
        Assert.NotEqual(baseText, await Text("demo:public/german"));
        Assert.NotEqual(baseText, await Text("german")); // an adapter name alone, when unambiguous
    }
}
