using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Serving.AdapterStore.RewardHeads;
using Serving.AdapterStore.Tests.RewardHeads;
using Serving.Checkpoints.RewardHeads;
using Serving.Inference.Engine;
using Serving.Inference.Node.Hosting;
using Serving.Inference.Node.RewardHeads;
using Serving.Inference.Rewards;
using Serving.Standalone.Tests.Infrastructure;
using Serving.Tests.Shared;
using StackExchange.Redis;

namespace Serving.Standalone.Tests.RewardHeads;

/// <summary>
/// The one-process system on the demo model over a real redis-server, with a second tenant and a second base model
/// (<c>other</c>: a GPT-2 config of width 16, known to the gateway's upload validation only; no node serves it).
/// </summary>
public sealed class DemoSystemFixture : IAsyncLifetime
{
    public const string DevKey = "sk-reward-heads-dev";
    public const string OtherKey = "sk-reward-heads-other";
    public const string OtherBase = "other";
    private readonly RedisServer _redis = new();
    private readonly string _otherBase = Directory.CreateTempSubdirectory("standalone-other-base-").FullName;

    public StandaloneSystem System { get; private set; } = null!;

    public string RedisConnection => _redis.ConnectionString;

    public static string DemoModel => Path.Combine(HostAssemblies.RepoRoot, "models", "demo");

    public async Task InitializeAsync()
    {
        File.WriteAllText(Path.Combine(_otherBase, "config.json"), """
            {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 16, "n_layer": 1, "n_head": 2,
             "n_positions": 64, "vocab_size": 50, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new"}
            """);
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Standalone:ModelPath"] = DemoModel,
            ["Standalone:Port"] = "0",
            ["Standalone:DevKey"] = DevKey,
            ["Standalone:Redis"] = _redis.ConnectionString,
            ["Standalone:SeedPublicAdapters"] = "false",
            ["Node:MaxContext"] = "256",
            [$"Gateway:BaseModels:{OtherBase}"] = Path.Combine(_otherBase, "config.json"),
            ["Gateway:Tenancy:StaticKeys:5:Key"] = OtherKey,
            ["Gateway:Tenancy:StaticKeys:5:Tenant"] = "other",
            ["Logging:LogLevel:Default"] = "Warning",
        }).Build();
        System = await StandaloneSystem.StartAsync(configuration);
    }

    public async Task DisposeAsync()
    {
        await System.StopAsync();
        _redis.Dispose();
        Directory.Delete(_otherBase, recursive: true);
    }
}

/// <summary>
/// Reward heads and alignment end to end through the gateway of the one-process system (real redis-server, real node on
/// the demo model): the demo heads seeded as <c>public/positive</c> (the node's default) and <c>public/positive-otter</c>;
/// every alignment method without naming a head, each reward equal to the same head's reward computed by a fresh decoder
/// from the head's folder; per-token rewards, streamed and not; the banner's curls; a tenant's own upload used, invisible
/// to another tenant, gone after delete; and the bad inputs (404, 422, 400 naming the field, 4xx uploads storing nothing).
/// </summary>
public sealed class RewardHeadSystemTests(DemoSystemFixture fixture) : IClassFixture<DemoSystemFixture>
{
    private const string Prompt = "<|endoftext|>The cat";
    private static readonly string DemoHead = Path.Combine(DemoSystemFixture.DemoModel, "reward-head");
    private static readonly string DemoOtter = Path.Combine(DemoSystemFixture.DemoModel, "otter");

    private HttpClient Gateway(string key)
    {
        var client = new HttpClient { BaseAddress = new Uri(fixture.System.GatewayUrl), Timeout = TimeSpan.FromSeconds(120) };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        return client;
    }

    private static async Task<JsonNode> JsonAsync(HttpResponseMessage r, HttpStatusCode expected)
    {
        var text = await r.Content.ReadAsStringAsync();
        Assert.True(r.StatusCode == expected, $"{(int)r.StatusCode}: {text}");
        return JsonNode.Parse(text)!;
    }

    private JsonObject Completion(JsonObject? extra = null, int maxTokens = 8)
    {
        var body = new JsonObject
        {
            ["model"] = fixture.System.ModelId, ["prompt"] = Prompt, ["max_tokens"] = maxTokens, ["temperature"] = 0.8, ["seed"] = 5, ["ignore_eos"] = true,
        };
        foreach (var (k, v) in extra ?? []) body[k] = v?.DeepClone();
        return body;
    }

    /// <summary>The head's reward of <see cref="Prompt"/> + <paramref name="text"/> (or of each prefix) from a fresh decoder of the node's model.</summary>
    private float[] Independent(string folder, string text, bool everyPrefix = false)
    {
        var host = fixture.System.NodeServices.GetRequiredService<ModelHost>();
        var prompt = host.Tokenizer.Encode(Prompt);
        var ids = host.Tokenizer.Encode(Prompt + text);
        Assert.Equal(prompt, ids[..prompt.Length]);
        using var head = File.Exists(Path.Combine(folder, RewardHeadFiles.OtterTensorsName))
            ? new RewardHead(OtterReader.ReadFolder(folder, host.Config), host.Model, "folder")
            : new RewardHead(RewardHeadReader.ReadFolder(folder, host.Config), host.Model, "folder");
        var ends = everyPrefix ? Enumerable.Range(prompt.Length + 1, ids.Length - prompt.Length) : [ids.Length];
        var rewards = new List<float>();
        foreach (var end in ends)
        {
            using var dec = new BatchDecoder(host.Model, 1);
            var seq = dec.TryAllocate()!;
            dec.SetRewardHead(seq, head);
            dec.Prefill(seq, ids[..end]);
            rewards.Add(seq.Reward);
        }
        return [.. rewards];
    }

    private static void Near(float expected, float actual) => Assert.InRange(Math.Abs(actual - expected), 0, 1e-3 * Math.Max(1, Math.Abs(expected)));

    [Fact]
    public async Task Start_SeedsTheDemoHeadsAsPublic_PositiveIsTheNodesDefault()
    {
        Assert.Equal([StandaloneSystem.DemoRewardHead, StandaloneSystem.DemoOtterHead], fixture.System.PublicRewardHeads);
        Assert.Equal("public/positive", fixture.System.DefaultRewardHead);
        using var other = Gateway(DemoSystemFixture.OtherKey);
        var list = (await JsonAsync(await other.GetAsync("/v1/reward-heads"), HttpStatusCode.OK)).AsArray();
        var seen = list.Select(h => (h!["tenant"]!.GetValue<string>(), h["name"]!.GetValue<string>(), h["baseModel"]!.GetValue<string>(), h["kind"]!.GetValue<string>()))
            .Where(h => h.Item1 == "public").Order().ToList();
        Assert.Equal([("public", "positive", "demo", "reward-head"), ("public", "positive-otter", "demo", "otter-side-network")], seen);
    }

    public static TheoryData<string, string?> Methods() => new()
    {
        { """{"method":"best_of_n","n":4}""", null },
        { """{"method":"args","k":10,"weight":1.5}""", null },
        { """{"method":"darwin","variants":3,"interval":4,"iterations":1}""", null },
        { """{"method":"args","k":4,"weight":1.5}""", "public/positive-otter" },
        { """{"method":"best_of_n","n":3}""", "positive-otter" },
    };

    /// <summary>
    /// Each method through the gateway (the default head unless one is named): one choice whose reward is the head's reward
    /// of prompt + answer computed independently, the method's report, and usage counting what it generated.
    /// </summary>
    [Theory]
    [MemberData(nameof(Methods))]
    public async Task EachAlignmentMethod_ThroughTheGateway_RewardIsTheHeadsRewardOfTheAnswer(string alignment, string? head)
    {
        using var gw = Gateway(DemoSystemFixture.DevKey);
        var spec = JsonNode.Parse(alignment)!.AsObject();
        var extra = new JsonObject { ["alignment"] = spec.DeepClone() };
        if (head is not null) extra["reward_head"] = head;
        using var response = await gw.PostAsJsonAsync("/v1/completions", Completion(extra));
        var json = await JsonAsync(response, HttpStatusCode.OK);
        bool otter = head is not null;
        Assert.Equal(otter ? "public/positive-otter@1" : "public/positive@1", response.Headers.GetValues("X-Serving-Reward-Head").Single());

        var choice = Assert.Single(json["choices"]!.AsArray())!;
        var reward = choice["reward"]!.GetValue<float>();
        Near(Independent(otter ? DemoOtter : DemoHead, choice["text"]!.GetValue<string>())[0], reward);

        var report = json["alignment"]!;
        string method = spec["method"]!.GetValue<string>();
        Assert.Equal(method, report["method"]!.GetValue<string>());
        int completion = json["usage"]!["completion_tokens"]!.GetValue<int>(), generated = json["usage"]!["generated_tokens"]!.GetValue<int>();
        Assert.Equal(8, completion);
        switch (method)
        {
            case "best_of_n":
                var samples = report["candidate_rewards"]!.AsArray().Select(r => r!.GetValue<float>()).ToList();
                Assert.Equal(spec["n"]!.GetValue<int>(), samples.Count);
                Assert.Equal(samples.Max(), reward);
                Assert.Equal(samples.IndexOf(samples.Max()), report["chosen"]!.GetValue<int>());
                Assert.Equal(samples.Count * completion, generated); // ignore_eos: every sample runs to max_tokens
                break;
            case "args":
                Assert.Equal(spec["k"]!.GetValue<int>(), report["candidates_per_step"]!.GetValue<int>());
                Assert.True(generated >= completion, $"generated {generated} < completion {completion}");
                break;
            default:
                var beams = report["candidate_rewards"]!.AsArray().Select(r => r!.GetValue<float>()).ToList();
                Assert.Equal(beams.Max(), reward);
                Assert.Equal(spec["variants"]!.GetValue<int>(), report["variants"]!.AsArray().Count);
                Assert.NotEmpty(report["archive"]!.AsArray());
                Assert.True(generated > completion, $"generated {generated}, completion {completion}");
                break;
        }
    }

    /// <summary>
    /// <c>return_token_rewards</c> through the gateway: one reward per generated token, each the head's reward of the prompt
    /// and the answer up to that token; streamed, the same rewards arrive one per content chunk.
    /// </summary>
    [Fact]
    public async Task ReturnTokenRewards_ThroughTheGateway_EachIsThePrefixReward_StreamedTheSame()
    {
        using var gw = Gateway(DemoSystemFixture.DevKey);
        var extra = new JsonObject { ["return_token_rewards"] = true, ["temperature"] = 0 };
        var json = await JsonAsync(await gw.PostAsJsonAsync("/v1/completions", Completion(extra)), HttpStatusCode.OK);
        var choice = json["choices"]![0]!;
        var tokenRewards = choice["token_rewards"]!.AsArray().Select(r => r!.GetValue<float>()).ToArray();
        Assert.Equal(8, tokenRewards.Length);
        Assert.Equal(choice["reward"]!.GetValue<float>(), tokenRewards[^1]);
        var expected = Independent(DemoHead, choice["text"]!.GetValue<string>(), everyPrefix: true);
        Assert.Equal(tokenRewards.Length, expected.Length);
        for (var i = 0; i < expected.Length; i++) Near(expected[i], tokenRewards[i]);

        extra["stream"] = true;
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = JsonContent.Create(Completion(extra)) };
        using var streamed = await gw.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, streamed.StatusCode);
        var chunks = (await streamed.Content.ReadAsStringAsync()).Split('\n')
            .Where(l => l.StartsWith("data: ", StringComparison.Ordinal) && l != "data: [DONE]").Select(l => JsonNode.Parse(l[6..])!).ToList();
        var perChunk = chunks.Where(c => c["choices"]!.AsArray().Count == 1 && c["choices"]![0]!["text"]!.GetValue<string>().Length > 0)
            .Select(c => c["choices"]![0]!["reward"]!.GetValue<float>()).ToArray();
        Assert.Equal(choice["text"]!.GetValue<string>(), string.Concat(chunks.Where(c => c["choices"]!.AsArray().Count == 1).Select(c => c["choices"]![0]!["text"]!.GetValue<string>())));
        Assert.Equal(tokenRewards, perChunk);
    }

    /// <summary>
    /// The banner's alignment curls, sent as printed (max_tokens cut to 8 to keep the test short), each answer rewarded by
    /// the default head; its upload curl, run with the files it names, stores the head for the dev tenant.
    /// </summary>
    [Fact]
    public async Task Banner_EachCurlAsPrinted_WorksThroughTheGateway()
    {
        var banner = StandaloneService.Banner(fixture.System);
        var bodies = Regex.Matches(banner, @"curl -s (\S+) [^\n]*\\\n\s*-d '(\{.*\})'").Select(m => (Url: m.Groups[1].Value, Body: JsonNode.Parse(m.Groups[2].Value)!.AsObject()))
            .Where(c => c.Body["alignment"] is not null).ToList();
        Assert.Equal(["best_of_n", "args", "darwin"], bodies.Select(c => c.Body["alignment"]!["method"]!.GetValue<string>()));
        Assert.Contains("public/positive", banner);

        using var gw = Gateway(DemoSystemFixture.DevKey);
        Assert.Contains($"Bearer {fixture.System.DevKey}", banner);
        foreach (var (url, body) in bodies)
        {
            Assert.Equal(fixture.System.GatewayUrl + "/v1/chat/completions", url);
            body["max_tokens"] = 8;
            using var response = await gw.PostAsJsonAsync(url, body);
            var json = await JsonAsync(response, HttpStatusCode.OK);
            Assert.Equal("public/positive@1", response.Headers.GetValues("X-Serving-Reward-Head").Single());
            Assert.Equal(body["alignment"]!["method"]!.GetValue<string>(), json["alignment"]!["method"]!.GetValue<string>());
            Assert.True(float.IsFinite(json["choices"]![0]!["reward"]!.GetValue<float>()));
        }

        var upload = Regex.Match(banner, @"curl -s (\S+/v1/reward-heads/(\S+)) .*\n\s*-F config\.json=@(\S+) -F head\.safetensors=@(\S+)");
        Assert.True(upload.Success, banner);
        using var form = new MultipartFormDataContent
        {
            { new ByteArrayContent(await File.ReadAllBytesAsync(upload.Groups[3].Value)), "config.json", "config.json" },
            { new ByteArrayContent(await File.ReadAllBytesAsync(upload.Groups[4].Value)), "head.safetensors", "head.safetensors" },
        };
        string name = upload.Groups[2].Value;
        var stored = await JsonAsync(await gw.PostAsync(upload.Groups[1].Value, form), HttpStatusCode.Created);
        Assert.Equal(("dev", name), (stored["head"]!["tenant"]!.GetValue<string>(), stored["head"]!["name"]!.GetValue<string>()));
        Assert.Equal(HttpStatusCode.NoContent, (await gw.DeleteAsync($"/v1/reward-heads/{name}")).StatusCode);
    }

    /// <summary>
    /// A tenant's own head, uploaded through the gateway, scores its requests (by bare name and tenant/name) with the same
    /// reward its folder gives; another tenant gets 404 for it on the API and on use; after a delete the owner gets 404 too.
    /// </summary>
    [Fact]
    public async Task UploadedHead_UsedThroughTheGateway_OtherTenant404_Delete404()
    {
        using var dev = Gateway(DemoSystemFixture.DevKey);
        using var other = Gateway(DemoSystemFixture.OtherKey);
        var up = await JsonAsync(await dev.PostAsync("/v1/reward-heads/own", HeadFiles.Form(HeadFiles.Folder(DemoHead))), HttpStatusCode.Created);
        Assert.Equal(("dev", "demo", 0, 1L), (up["head"]!["tenant"]!.GetValue<string>(), up["head"]!["baseModel"]!.GetValue<string>(), up["head"]!["layer"]!.GetValue<int>(),
            up["head"]!["version"]!.GetValue<long>()));
        var names = (await JsonAsync(await dev.GetAsync("/v1/reward-heads"), HttpStatusCode.OK)).AsArray().Select(h => $"{h!["tenant"]}/{h["name"]}").ToList();
        Assert.Contains("dev/own", names);
        Assert.Contains("public/positive", names);

        foreach (var name in new[] { "own", "dev/own" })
        {
            using var response = await dev.PostAsJsonAsync("/v1/completions", Completion(new JsonObject { ["reward_head"] = name, ["temperature"] = 0 }));
            var json = await JsonAsync(response, HttpStatusCode.OK);
            Assert.Equal("dev/own@1", response.Headers.GetValues("X-Serving-Reward-Head").Single());
            Near(Independent(DemoHead, json["choices"]![0]!["text"]!.GetValue<string>())[0], json["choices"]![0]!["reward"]!.GetValue<float>());
        }

        Assert.Equal(HttpStatusCode.NotFound, (await other.GetAsync("/v1/reward-heads/own")).StatusCode);
        Assert.DoesNotContain((await JsonAsync(await other.GetAsync("/v1/reward-heads"), HttpStatusCode.OK)).AsArray(), h => h!["tenant"]!.GetValue<string>() == "dev");
        foreach (var name in new[] { "own", "dev/own" })
        {
            var error = (await JsonAsync(await other.PostAsJsonAsync("/v1/completions", Completion(new JsonObject { ["reward_head"] = name })), HttpStatusCode.NotFound))["error"]!;
            Assert.Equal(("reward_head_not_found", "reward_head"), (error["code"]!.GetValue<string>(), error["param"]!.GetValue<string>()));
        }

        // Delete: the node drops its copy on the store's event (otherwise it re-checks a cached head only after 30 s).
        var source = fixture.System.NodeServices.GetRequiredService<StoreRewardHeadSource>();
        Assert.Contains("dev/own@1", source.Cached);
        Assert.Equal(HttpStatusCode.NoContent, (await dev.DeleteAsync("/v1/reward-heads/own")).StatusCode);
        await WaitAsync(() => !source.Cached.Contains("dev/own@1"), TimeSpan.FromSeconds(10));
        var gone = (await JsonAsync(await dev.PostAsJsonAsync("/v1/completions", Completion(new JsonObject { ["reward_head"] = "own" })), HttpStatusCode.NotFound))["error"]!;
        Assert.Equal("reward_head_not_found", gone["code"]!.GetValue<string>());
    }

    public static TheoryData<string, HttpStatusCode, string, string?> BadRequests() => new()
    {
        { """{"reward_head":"public/nope"}""", HttpStatusCode.NotFound, "reward_head", "reward_head_not_found" },
        { """{"reward_head":"nope","alignment":{"method":"args"}}""", HttpStatusCode.NotFound, "reward_head", "reward_head_not_found" },
        { """{"alignment":{"method":"best_of_n","n":0}}""", HttpStatusCode.BadRequest, "alignment.n", null },
        { """{"alignment":{"method":"best_of_n","n":65}}""", HttpStatusCode.BadRequest, "alignment.n", null },
        { """{"alignment":{"method":"args","k":0}}""", HttpStatusCode.BadRequest, "alignment.k", null },
        { """{"alignment":{"method":"args","k":100000}}""", HttpStatusCode.BadRequest, "alignment.k", null },
        { """{"alignment":{"method":"args","weight":1e9}}""", HttpStatusCode.BadRequest, "alignment.weight", null },
        { """{"alignment":{"method":"darwin","interval":0}}""", HttpStatusCode.BadRequest, "alignment.interval", null },
        { """{"alignment":{"method":"darwin","variants":1}}""", HttpStatusCode.BadRequest, "alignment.variants", null },
        { """{"alignment":{"method":"darwin","iterations":9}}""", HttpStatusCode.BadRequest, "alignment.iterations", null },
        { """{"alignment":{"method":"darwin","variants":3,"survivors":4}}""", HttpStatusCode.BadRequest, "alignment.survivors", null },
        { """{"alignment":{"method":"beam"}}""", HttpStatusCode.BadRequest, "alignment.method", null },
        { """{"alignment":{"n":4}}""", HttpStatusCode.BadRequest, "alignment.method", null },
        { """{"n":2,"alignment":{"method":"best_of_n"}}""", HttpStatusCode.BadRequest, "n", null },
    };

    /// <summary>Refusals through the gateway from the node, each with its status, the field at fault and a message.</summary>
    [Theory]
    [MemberData(nameof(BadRequests))]
    public async Task BadHeadOrAlignment_ThroughTheGateway_SpecificStatusNamingTheField(string extra, HttpStatusCode status, string param, string? code)
    {
        using var gw = Gateway(DemoSystemFixture.DevKey);
        var error = (await JsonAsync(await gw.PostAsJsonAsync("/v1/completions", Completion(JsonNode.Parse(extra)!.AsObject())), status))["error"]!;
        Assert.Equal(param, error["param"]!.GetValue<string>());
        Assert.Equal(code, error["code"]?.GetValue<string>());
        var message = error["message"]!.GetValue<string>();
        Assert.Contains(param == "reward_head" ? "reward head" : param, message, StringComparison.Ordinal);
    }

    /// <summary>
    /// A head for another base: uploaded for <c>demo</c> with the wrong width it is refused 422 and nothing is stored; stored
    /// for base <c>other</c> (which fits it), naming it in a request to the demo model is refused 422 <c>reward_head_incompatible</c>.
    /// </summary>
    [Fact]
    public async Task HeadForAnotherBase_Upload422NothingStored_Use422()
    {
        using var dev = Gateway(DemoSystemFixture.DevKey);
        var refused = await JsonAsync(await dev.PostAsync("/v1/reward-heads/narrow", HeadFiles.Form(HeadFiles.Random(16))), HttpStatusCode.UnprocessableEntity);
        Assert.Equal("head_base_mismatch", refused["code"]!.GetValue<string>());
        Assert.Empty(await HeadKeysAsync("dev", "narrow"));
        refused = await JsonAsync(await dev.PostAsync("/v1/reward-heads/narrow", HeadFiles.Form(HeadFiles.Folder(DemoHead), fields: ("base_model", DemoSystemFixture.OtherBase))),
            HttpStatusCode.UnprocessableEntity);
        Assert.Equal("head_base_mismatch", refused["code"]!.GetValue<string>());
        Assert.Empty(await HeadKeysAsync("dev", "narrow"));

        var stored = await JsonAsync(await dev.PostAsync("/v1/reward-heads/narrow", HeadFiles.Form(HeadFiles.Random(16, baseModel: DemoSystemFixture.OtherBase))), HttpStatusCode.Created);
        Assert.Equal(DemoSystemFixture.OtherBase, stored["head"]!["baseModel"]!.GetValue<string>());
        foreach (var body in new[] { Completion(new JsonObject { ["reward_head"] = "narrow" }), Completion(new JsonObject { ["reward_head"] = "dev/narrow", ["alignment"] = new JsonObject { ["method"] = "args" } }) })
        {
            var error = (await JsonAsync(await dev.PostAsJsonAsync("/v1/completions", body), HttpStatusCode.UnprocessableEntity))["error"]!;
            Assert.Equal(("reward_head_incompatible", "reward_head", "invalid_request_error"),
                (error["code"]!.GetValue<string>(), error["param"]!.GetValue<string>(), error["type"]!.GetValue<string>()));
            Assert.Contains("'other'", error["message"]!.GetValue<string>(), StringComparison.Ordinal);
        }
        Assert.Equal(HttpStatusCode.NoContent, (await dev.DeleteAsync("/v1/reward-heads/narrow")).StatusCode);
    }

    public static TheoryData<string, int, string> BadUploads() => new()
    {
        { "no_tensors", 400, "head_tensors_missing" },
        { "truncated", 400, "head_safetensors_invalid" },
        { "not_finite", 400, "head_tensor_not_finite" },
        { "bad_pooling", 400, "invalid_head_config" },
        { "layer_out_of_range", 422, "head_base_mismatch" },
        { "otter_for_fewer_layers", 422, "head_base_mismatch" },
    };

    /// <summary>Malformed head files through the standalone gateway: each its own status and code, nothing written to Redis.</summary>
    [Theory]
    [MemberData(nameof(BadUploads))]
    public async Task MalformedHeadUpload_SpecificStatusAndCode_NothingStored(string variant, int status, string code)
    {
        using var dev = Gateway(DemoSystemFixture.DevKey);
        var demo = HeadFiles.Folder(DemoHead);
        var form = variant switch
        {
            "no_tensors" => HeadFiles.Form(demo, tensors: false),
            "truncated" => HeadFiles.Form(demo with { Tensors = demo.Tensors[..(demo.Tensors.Length / 2)] }),
            "not_finite" => HeadFiles.Form(HeadFiles.Random(192, poison: float.NaN)),
            "bad_pooling" => HeadFiles.Form(HeadFiles.Random(192, editConfig: c => c["pooling"] = "max")),
            "layer_out_of_range" => HeadFiles.Form(HeadFiles.Random(192, layer: 7)),
            _ => HeadFiles.Form(OtterWithLayers(3)),
        };
        var problem = await JsonAsync(await dev.PostAsync("/v1/reward-heads/broken", form), (HttpStatusCode)status);
        Assert.Equal(code, problem["code"]!.GetValue<string>());
        Assert.False(string.IsNullOrWhiteSpace(problem["detail"]!.GetValue<string>()));
        Assert.Equal(HttpStatusCode.NotFound, (await dev.GetAsync("/v1/reward-heads/broken")).StatusCode);
        Assert.Empty(await HeadKeysAsync("dev", "broken"));
    }

    /// <summary>The demo's Otter files with <c>num_hidden_layers</c> changed: made for a model of another depth.</summary>
    private static RewardHeadFiles OtterWithLayers(int layers)
    {
        var files = HeadFiles.Folder(DemoOtter);
        var config = JsonNode.Parse(files.ConfigJson)!.AsObject();
        config["num_hidden_layers"] = layers;
        return files with { ConfigJson = Encoding.UTF8.GetBytes(config.ToJsonString()) };
    }

    /// <summary>Every Redis key of <paramref name="tenant"/>'s head <paramref name="name"/> (versions, chunks, its index entry's key aside).</summary>
    private async Task<List<string>> HeadKeysAsync(string tenant, string name)
    {
        await using var redis = await ConnectionMultiplexer.ConnectAsync(fixture.RedisConnection);
        var keys = new List<string>();
        await foreach (var k in redis.GetServers()[0].KeysAsync(pattern: "*")) keys.Add(k.ToString());
        var mine = keys.Where(k => k.Contains($"{{{tenant}/{name}}}:h:", StringComparison.Ordinal)).ToList();
        var index = await redis.GetDatabase().SetMembersAsync(keys.FirstOrDefault(k => k.EndsWith($"{{{tenant}}}:hidx", StringComparison.Ordinal)) ?? "none");
        return [.. mine, .. index.Select(m => m.ToString()).Where(m => m == name)];
    }

    /// <summary>Until <paramref name="done"/> holds; fails after <paramref name="bound"/> (an event that never arrives, not a speed guess).</summary>
    private static async Task WaitAsync(Func<bool> done, TimeSpan bound)
    {
        var clock = Stopwatch.StartNew();
        while (!done())
        {
            Assert.True(clock.Elapsed < bound, "the node never saw the store's event");
            await Task.Delay(10);
        }
    }
}
