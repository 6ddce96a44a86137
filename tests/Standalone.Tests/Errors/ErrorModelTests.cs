using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Configuration;
using Serving.Contracts.Errors;
using Serving.Fixtures;

namespace Serving.Standalone.Tests.Errors;

/// <summary>
/// The one-process system (embedded Garnet, one node, the gateway) on a random-weight model slow enough that a long
/// stream holds the node's only slot: one KV slot and a queue of one, and a tenant allowed one request a minute.
/// </summary>
public sealed class SystemFixture : IAsyncLifetime
{
    public const string LimitedKey = "sk-error-model-limited";
    public const string DevKey = "sk-error-model-dev";

    private readonly string _model = Path.Combine(Path.GetTempPath(), "serving-standalone-tests-" + Environment.ProcessId, "slow");

    public StandaloneSystem System { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        FixtureCheckpoint.Write(_model, FixtureShape.TinyGpt2 with { Hidden = 192, Layers = 4, Heads = 4, Intermediate = 768, MaxPositions = 2048 });
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Standalone:ModelPath"] = _model,
            ["Standalone:Port"] = "0",
            ["Standalone:DevKey"] = DevKey,
            ["Standalone:SeedPublicAdapters"] = "false",
            ["Node:MaxBatch"] = "1",
            ["Node:MaxQueue"] = "1",
            ["Node:MaxContext"] = "2048",
            ["Node:Threads"] = "1",
            ["Node:ShutdownDrain"] = "00:00:00",
            ["Gateway:Tenancy:StaticKeys:5:Key"] = LimitedKey,
            ["Gateway:Tenancy:StaticKeys:5:Tenant"] = "limited",
            ["Gateway:RateLimits:Tenants:limited:RequestsPerMinute"] = "1",
            ["Logging:LogLevel:Default"] = "Warning",
        }).Build();
        System = await StandaloneSystem.StartAsync(configuration);
    }

    public async Task DisposeAsync()
    {
        await System.StopAsync();
        Directory.Delete(_model, recursive: true);
    }
}

/// <summary>
/// The same refusal reads the same whichever service sends it: the node directly, or the gateway in front of it, answer
/// 400, 404 and 429 with the same status, <c>type</c> and <c>code</c> (rows of <see cref="ErrorCodes"/>). 401 exists only
/// at the gateway (nodes take no keys): its body is compared with the table.
/// </summary>
public sealed class ErrorModelTests(SystemFixture fixture) : IClassFixture<SystemFixture>
{
    private sealed record Refusal(int Status, string Type, string? Code);

    private HttpClient Node() => new() { BaseAddress = new Uri(fixture.System.NodeUrl), Timeout = TimeSpan.FromSeconds(60) };

    private HttpClient Gateway(string? key = SystemFixture.DevKey)
    {
        var client = new HttpClient { BaseAddress = new Uri(fixture.System.GatewayUrl), Timeout = TimeSpan.FromSeconds(60) };
        if (key is not null) client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        return client;
    }

    private static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");

    private string Chat(string? model = null) =>
        JsonSerializer.Serialize(new { model = model ?? fixture.System.ModelId, messages = new[] { new { role = "user", content = "hi" } }, max_tokens = 2 });

    private static async Task<Refusal> RefusalAsync(HttpResponseMessage response)
    {
        var text = await response.Content.ReadAsStringAsync();
        using var doc = JsonDocument.Parse(text);
        var error = doc.RootElement.GetProperty("error");
        Assert.False(string.IsNullOrWhiteSpace(error.GetProperty("message").GetString()), text);
        return new Refusal((int)response.StatusCode, error.GetProperty("type").GetString()!, error.GetProperty("code").GetString());
    }

    private static Refusal Row(ErrorCode row) => new(row.Status, row.Type, row.Code);

    [Fact]
    public async Task MalformedJson_NodeAndGateway_Same400TypeAndCode()
    {
        using var node = Node();
        using var gateway = Gateway();
        using var direct = await node.PostAsync("/v1/chat/completions", Json("{\"model\": "));
        using var proxied = await gateway.PostAsync("/v1/chat/completions", Json("{\"model\": "));

        var fromNode = await RefusalAsync(direct);
        Assert.Equal(Row(ErrorCodes.InvalidJson), fromNode);
        Assert.Equal(fromNode, await RefusalAsync(proxied));
    }

    [Fact]
    public async Task UnknownModel_NodeAndGateway_Same404TypeAndCode()
    {
        using var node = Node();
        using var gateway = Gateway();
        using var direct = await node.PostAsync("/v1/chat/completions", Json(Chat("no-such-model")));
        using var proxied = await gateway.PostAsync("/v1/chat/completions", Json(Chat("no-such-model")));
        using var adapterDirect = await node.PostAsync("/v1/chat/completions", Json(Chat(fixture.System.ModelId + ":public/missing")));
        using var adapterProxied = await gateway.PostAsync("/v1/chat/completions", Json(Chat(fixture.System.ModelId + ":public/missing")));

        var fromNode = await RefusalAsync(direct);
        Assert.Equal(Row(ErrorCodes.ModelNotFound), fromNode);
        Assert.Equal(fromNode, await RefusalAsync(proxied));
        Assert.Equal(fromNode, await RefusalAsync(adapterDirect));
        Assert.Equal(fromNode, await RefusalAsync(adapterProxied));
    }

    /// <summary>
    /// This system's model has no reward head, so no default: alignment and per-token rewards without a head are refused
    /// 400 naming <c>reward_head</c> / <c>return_token_rewards</c>, the same from the node and through the gateway.
    /// </summary>
    [Theory]
    [InlineData("""{"alignment":{"method":"best_of_n","n":2}}""", "reward_head")]
    [InlineData("""{"alignment":{"method":"args"}}""", "reward_head")]
    [InlineData("""{"alignment":{"method":"darwin"}}""", "reward_head")]
    [InlineData("""{"return_token_rewards":true}""", "return_token_rewards")]
    public async Task RewardsWithoutAHead_NodeAndGateway_Same400NamingTheField(string extra, string param)
    {
        Assert.Null(fixture.System.DefaultRewardHead);
        var body = JsonNode.Parse(Chat())!.AsObject();
        foreach (var (k, v) in JsonNode.Parse(extra)!.AsObject()) body[k] = v?.DeepClone();
        using var node = Node();
        using var gateway = Gateway();
        using var direct = await node.PostAsync("/v1/chat/completions", Json(body.ToJsonString()));
        using var proxied = await gateway.PostAsync("/v1/chat/completions", Json(body.ToJsonString()));
        string directText = await direct.Content.ReadAsStringAsync(), proxiedText = await proxied.Content.ReadAsStringAsync();

        Assert.Equal(Row(ErrorCodes.InvalidParameter), await RefusalAsync(direct));
        Assert.Equal(await RefusalAsync(direct), await RefusalAsync(proxied));
        Assert.Equal(param, JsonNode.Parse(directText)!["error"]!["param"]!.GetValue<string>());
        Assert.Equal(directText, proxiedText);
        Assert.Contains("reward_head", JsonNode.Parse(directText)!["error"]!["message"]!.GetValue<string>(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task BadKey_Gateway401_IsTheTablesInvalidApiKey_NodesTakeNoKeys()
    {
        using var gateway = Gateway("sk-not-a-key");
        using var refused = await gateway.PostAsync("/v1/chat/completions", Json(Chat()));
        Assert.Equal(Row(ErrorCodes.InvalidApiKey), await RefusalAsync(refused));
        Assert.Equal("invalid_request_error", ErrorCodes.InvalidApiKey.Type); // OpenAI's own type for a wrong key
    }

    [Fact]
    public async Task TooManyRequests_NodeQueueFullAndGatewayRateLimit_Same429TypeAndCode()
    {
        // Gateway: the limited tenant's one request a minute is spent by the first request (refused later, as malformed).
        using var limited = Gateway(SystemFixture.LimitedKey);
        using (var first = await limited.PostAsync("/v1/chat/completions", Json("{")))
            Assert.Equal(HttpStatusCode.BadRequest, first.StatusCode);
        using var proxied = await limited.PostAsync("/v1/chat/completions", Json(Chat()));
        Assert.NotNull(proxied.Headers.RetryAfter);
        var fromGateway = await RefusalAsync(proxied);

        // Node: A holds the only slot, B waits in the queue of one, C finds it full.
        using var node = Node();
        using var holding = new CancellationTokenSource();
        var a = await node.SendAsync(new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
        {
            Content = Json(JsonSerializer.Serialize(new { model = fixture.System.ModelId, prompt = "long", max_tokens = 2000, ignore_eos = true, stream = true })),
        }, HttpCompletionOption.ResponseHeadersRead, holding.Token);
        try
        {
            await WaitForNodeAsync(node, s => s.GetProperty("running_requests").GetInt32() == 1);
            var b = node.PostAsync("/v1/completions", Json(JsonSerializer.Serialize(new { model = fixture.System.ModelId, prompt = "b", max_tokens = 2, ignore_eos = true })));
            await WaitForNodeAsync(node, s => s.GetProperty("queue_depth").GetInt32() == 1);
            using var direct = await node.PostAsync("/v1/completions", Json(JsonSerializer.Serialize(new { model = fixture.System.ModelId, prompt = "c", max_tokens = 2 })));
            Assert.NotNull(direct.Headers.RetryAfter);
            var fromNode = await RefusalAsync(direct);

            Assert.Equal(Row(ErrorCodes.RequestRateLimited), fromNode);
            Assert.Equal(fromNode, fromGateway);

            // Ending A lets B run: the queued request was not dropped.
            await holding.CancelAsync();
            a.Dispose();
            using var bResponse = await b;
            Assert.Equal(HttpStatusCode.OK, bResponse.StatusCode);
        }
        finally
        {
            a.Dispose();
        }
    }

    /// <summary>Polls <c>/node/status</c> until <paramref name="done"/> holds (bounded: fails after 30 s).</summary>
    private static async Task WaitForNodeAsync(HttpClient node, Func<JsonElement, bool> done)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (true)
        {
            using var doc = JsonDocument.Parse(await node.GetStringAsync("/node/status"));
            if (done(doc.RootElement)) return;
            Assert.True(DateTime.UtcNow < deadline, $"the node never reached the expected state: {doc.RootElement}");
            await Task.Delay(5);
        }
    }
}
