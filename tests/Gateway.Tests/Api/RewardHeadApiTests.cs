using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Serving.AdapterStore.Ingest;
using Serving.AdapterStore.RewardHeads;
using Serving.AdapterStore.Tests.RewardHeads;
using Serving.Checkpoints;
using Serving.Gateway.Tests.Infrastructure;
using StackExchange.Redis;
using Microsoft.Extensions.DependencyInjection;

namespace Serving.Gateway.Tests.Api;

/// <summary>
/// Reward heads through the gateway's tenant API (real redis-server, real HTTP): upload, list, get, versions, delete;
/// tenant isolation with <c>public</c> readable by all; every malformed upload refused with its own code and nothing
/// stored. The base is the tiny GPT-2 config (hidden size 16, one layer).
/// </summary>
[Collection(RedisCollection.Name)]
public sealed class RewardHeadApiTests(RedisFixture redis)
{
    private static readonly string BaseConfig = TinyPeft.WriteBaseConfig();

    private Task<GatewayHost> StartAsync(Dictionary<string, string?>? extra = null)
    {
        var config = new Dictionary<string, string?> { ["Gateway:BaseModels:fake"] = BaseConfig };
        foreach (var (k, v) in extra ?? []) config[k] = v;
        return GatewayHost.StartAsync(redis.ConnectionString, config);
    }

    private static async Task<JsonElement> JsonAsync(HttpResponseMessage r, HttpStatusCode expected)
    {
        var text = await r.Content.ReadAsStringAsync();
        Assert.True(r.StatusCode == expected, $"{(int)r.StatusCode}: {text}");
        return text.Length == 0 ? default : JsonDocument.Parse(text).RootElement.Clone();
    }

    /// <summary>Every Redis key of the gateway's reward heads (any tenant).</summary>
    private async Task<List<string>> HeadKeysAsync(GatewayHost gw)
    {
        await using var c = await ConnectionMultiplexer.ConnectAsync(redis.ConnectionString);
        var keys = new List<string>();
        await foreach (var k in c.GetServers()[0].KeysAsync(pattern: $"{gw.Prefix}-adp:*")) keys.Add(k.ToString());
        return [.. keys.Where(k => k.Contains(":h:", StringComparison.Ordinal) || k.EndsWith(":hidx", StringComparison.Ordinal))];
    }

    [Fact]
    public async Task Upload_List_Get_Versions_Delete_ThroughTheTenantApi()
    {
        await using var gw = await StartAsync();
        using var a = gw.Client(GatewayHost.KeyA);

        var up = await JsonAsync(await a.PostAsync("/v1/reward-heads/pos", HeadFiles.Form(HeadFiles.Random(16, layer: 1, baseModel: "fake"))), HttpStatusCode.Created);
        var head = up.GetProperty("head");
        Assert.Equal((1, "tenant-a", "fake", "reward-head", 1, "sum", "test head"),
            (head.GetProperty("version").GetInt64(), head.GetProperty("tenant").GetString(), head.GetProperty("baseModel").GetString(), head.GetProperty("kind").GetString(),
             head.GetProperty("layer").GetInt32(), head.GetProperty("pooling").GetString(), head.GetProperty("label").GetString()));
        Assert.Equal(8 * 16 + 8 + 8 + 1, head.GetProperty("parameters").GetInt64());

        await JsonAsync(await a.PostAsync("/v1/reward-heads/pos", HeadFiles.Form(HeadFiles.Random(16, seed: 2), fields: ("base_model", "fake"))), HttpStatusCode.Created);
        var list = await JsonAsync(await a.GetAsync("/v1/reward-heads"), HttpStatusCode.OK);
        Assert.Equal([("tenant-a", "pos", 2L)], list.EnumerateArray().Select(h => (h.GetProperty("tenant").GetString(), h.GetProperty("name").GetString(), h.GetProperty("version").GetInt64())));
        var get = await JsonAsync(await a.GetAsync("/v1/reward-heads/pos"), HttpStatusCode.OK);
        Assert.Equal(2, get.GetProperty("version").GetInt64());
        Assert.Equal(0, get.GetProperty("layer").GetInt32());
        Assert.True(get.GetProperty("created").GetDateTimeOffset() > DateTimeOffset.UnixEpoch);
        var versions = await JsonAsync(await a.GetAsync("/v1/reward-heads/pos/versions"), HttpStatusCode.OK);
        Assert.Equal([1L, 2L], versions.EnumerateArray().Select(v => v.GetProperty("version").GetInt64()));
        Assert.Equal(1, (await JsonAsync(await a.GetAsync("/v1/reward-heads/pos/versions/1"), HttpStatusCode.OK)).GetProperty("layer").GetInt32());

        Assert.Equal(HttpStatusCode.NoContent, (await a.DeleteAsync("/v1/reward-heads/pos/versions/2")).StatusCode);
        Assert.Equal(1, (await JsonAsync(await a.GetAsync("/v1/reward-heads/pos"), HttpStatusCode.OK)).GetProperty("version").GetInt64());
        Assert.Equal(HttpStatusCode.NoContent, (await a.DeleteAsync("/v1/reward-heads/pos")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await a.GetAsync("/v1/reward-heads/pos")).StatusCode);
        Assert.Equal(0, (await JsonAsync(await a.GetAsync("/v1/reward-heads"), HttpStatusCode.OK)).GetArrayLength());
        using var anonymous = gw.Client(null);
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.GetAsync("/v1/reward-heads")).StatusCode);
    }

    [Fact]
    public async Task AnotherTenantsHead_IsNotFound_PublicHeadsAreReadableByAll()
    {
        await using var gw = await StartAsync();
        using var a = gw.Client(GatewayHost.KeyA);
        using var b = gw.Client(GatewayHost.KeyB);
        await JsonAsync(await a.PostAsync("/v1/reward-heads/secret", HeadFiles.Form(HeadFiles.Random(16))), HttpStatusCode.Created);
        await gw.Services.GetRequiredService<RewardHeadIngestor>().IngestAsync(new RewardHeadUpload("public", "shared", "fake", HeadFiles.Random(16, seed: 9)), CancellationToken.None);

        Assert.Equal(HttpStatusCode.NotFound, (await b.GetAsync("/v1/reward-heads/secret")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await b.GetAsync("/v1/reward-heads/secret/versions")).StatusCode);
        using (var spoofed = new HttpRequestMessage(HttpMethod.Get, "/v1/reward-heads/secret"))
        {
            spoofed.Headers.Add("X-Serving-Tenant", "tenant-a"); // the tenant is the key's, never a client header
            using var r = await b.SendAsync(spoofed);
            Assert.Equal(HttpStatusCode.NotFound, r.StatusCode);
        }
        Assert.Equal(HttpStatusCode.NotFound, (await b.DeleteAsync("/v1/reward-heads/secret")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await b.DeleteAsync("/v1/reward-heads/shared")).StatusCode);
        var seenByB = await JsonAsync(await b.GetAsync("/v1/reward-heads"), HttpStatusCode.OK);
        Assert.Equal([("public", "shared")], seenByB.EnumerateArray().Select(h => (h.GetProperty("tenant").GetString(), h.GetProperty("name").GetString())));
        Assert.Equal("public", (await JsonAsync(await b.GetAsync("/v1/reward-heads/shared"), HttpStatusCode.OK)).GetProperty("tenant").GetString());
        // The owner still has its head, untouched by the other tenant's attempts.
        Assert.Equal(1, (await JsonAsync(await a.GetAsync("/v1/reward-heads/secret"), HttpStatusCode.OK)).GetProperty("version").GetInt64());
    }

    public static TheoryData<string, int, string> BadUploads() => new()
    {
        { "no_config", 400, "head_config_missing" },
        { "no_tensors", 400, "head_tensors_missing" },
        { "pickle", 400, "pickle_refused" },
        { "not_multipart", 400, "upload_invalid" },
        { "not_json", 400, "invalid_head_config" },
        { "bad_activation", 400, "invalid_head_config" },
        { "truncated", 400, "head_safetensors_invalid" },
        { "missing_tensor", 400, "head_tensor_missing" },
        { "not_finite", 400, "head_tensor_not_finite" },
        { "other_width", 422, "head_base_mismatch" },
        { "layer_out_of_range", 422, "head_base_mismatch" },
        { "other_base_name", 422, "head_base_mismatch" },
        { "unknown_base", 400, "base_model_unknown" },
        { "too_large", 413, "payload_too_large" },
    };

    [Theory]
    [MemberData(nameof(BadUploads))]
    public async Task BadUpload_SpecificStatusAndCode_NothingStored(string variant, int status, string code)
    {
        await using var gw = await StartAsync(new() { ["AdapterStore:Api:MaxRewardHeadUploadBytes"] = "4096" });
        using var a = gw.Client(GatewayHost.KeyA);
        var good = HeadFiles.Random(16);
        HttpContent body = variant switch
        {
            "no_config" => HeadFiles.Form(good, config: false),
            "no_tensors" => HeadFiles.Form(good, tensors: false),
            "pickle" => PickleForm(good),
            "not_multipart" => new StringContent("{}", Encoding.UTF8, "application/json"),
            "not_json" => HeadFiles.Form(good with { ConfigJson = "not json"u8.ToArray() }),
            "bad_activation" => HeadFiles.Form(HeadFiles.Random(16, editConfig: c => c["activation"] = "softmax")),
            "truncated" => HeadFiles.Form(good with { Tensors = good.Tensors[..16] }),
            "missing_tensor" => HeadFiles.Form(HeadFiles.Random(16, dropBias: true)),
            "not_finite" => HeadFiles.Form(HeadFiles.Random(16, poison: float.PositiveInfinity)),
            "other_width" => HeadFiles.Form(HeadFiles.Random(24)),
            "layer_out_of_range" => HeadFiles.Form(HeadFiles.Random(16, layer: 5)),
            "other_base_name" => HeadFiles.Form(HeadFiles.Random(16, baseModel: "llama-3-8b"), fields: ("base_model", "fake")),
            "unknown_base" => HeadFiles.Form(good, fields: ("base_model", "nope")),
            _ => HeadFiles.Form(good with { Tensors = new byte[8192] }),
        };
        using var response = await a.PostAsync("/v1/reward-heads/h", body);
        var problem = await JsonAsync(response, (HttpStatusCode)status);
        Assert.Equal(code, problem.GetProperty("code").GetString());
        Assert.EndsWith("/" + code, problem.GetProperty("type").GetString());
        Assert.False(string.IsNullOrWhiteSpace(problem.GetProperty("detail").GetString()));
        Assert.Equal(0, (await JsonAsync(await a.GetAsync("/v1/reward-heads"), HttpStatusCode.OK)).GetArrayLength());
        Assert.Empty(await HeadKeysAsync(gw));
    }

    private static MultipartFormDataContent PickleForm(RewardHeadFiles files)
    {
        var form = new MultipartFormDataContent();
        form.Add(new ByteArrayContent(files.ConfigJson), "config.json", "config.json");
        form.Add(new ByteArrayContent([0x80, 0x02]), "head.bin", "head.bin");
        return form;
    }

    [Fact]
    public async Task OpenApi_DescribesRewardHeadsAndTheRequestExtensions()
    {
        await using var gw = await StartAsync();
        using var anonymous = gw.Client(null);
        var doc = JsonDocument.Parse(await anonymous.GetStringAsync("/openapi/v1.json")).RootElement;
        var paths = doc.GetProperty("paths");
        Assert.True(paths.TryGetProperty("/v1/reward-heads/{name}", out var upload) && upload.TryGetProperty("post", out _));
        Assert.True(paths.TryGetProperty("/v1/reward-heads", out _));
        Assert.True(paths.TryGetProperty("/v1/reward-heads/{name}/versions", out _));
        string text = doc.GetRawText();
        foreach (var field in new[] { "reward_head", "return_token_rewards", "alignment", "early_exit", "generated_tokens", "best_of_n" })
            Assert.Contains(field, text);
        Assert.True(paths.GetProperty("/v1/chat/completions").TryGetProperty("post", out _));
        Assert.True(paths.GetProperty("/v1/completions").TryGetProperty("post", out _));
    }
}
