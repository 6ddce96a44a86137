using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Configuration;
using Serving.Fixtures;
using Serving.Inference.Node.OpenAI;
using Serving.Tests.Shared;

namespace Serving.Standalone.Tests.Accounting;

/// <summary>
/// The one-process system (embedded Garnet, a real node on a random-weight model whose decode steps take long enough to
/// cancel a stream, the gateway) with one tenant per test, so each test reads its own budget and usage, and an admin key.
/// </summary>
public sealed class AccountingSystemFixture : IAsyncLifetime
{
    public const string AdminKey = "sk-accounting-admin";
    public const int Context = 2048;
    public const int TokensPerMinute = 200_000;

    private readonly string _model = Path.Combine(Path.GetTempPath(), "serving-standalone-tests-" + Environment.ProcessId, "accounting");

    public StandaloneSystem System { get; private set; } = null!;

    /// <summary>The key of a tenant of that name (one per test).</summary>
    public static string KeyOf(string tenant) => "sk-accounting-" + tenant;

    public static readonly string[] Tenants = ["clamp", "nfour", "stream", "cancel"];

    public async Task InitializeAsync()
    {
        FixtureCheckpoint.Write(_model, FixtureShape.TinyGpt2 with { Hidden = 192, Layers = 4, Heads = 4, Intermediate = 768, MaxPositions = Context });
        var settings = new Dictionary<string, string?>
        {
            ["Standalone:ModelPath"] = _model,
            ["Standalone:Port"] = "0",
            ["Standalone:AdminKey"] = AdminKey,
            ["Standalone:SeedPublicAdapters"] = "false",
            ["Node:MaxContext"] = "2048",
            ["Node:Threads"] = "1",
            ["Node:ShutdownDrain"] = "00:00:00",
            ["Gateway:RateLimits:RequestsPerMinute"] = "100000",
            ["Logging:LogLevel:Default"] = "Warning",
        };
        for (int i = 0; i < Tenants.Length; i++)
        {
            settings[$"Gateway:Tenancy:StaticKeys:{5 + i}:Key"] = KeyOf(Tenants[i]);
            settings[$"Gateway:Tenancy:StaticKeys:{5 + i}:Tenant"] = Tenants[i];
        }
        System = await StandaloneSystem.StartAsync(new ConfigurationBuilder().AddInMemoryCollection(settings).Build());
    }

    public async Task DisposeAsync()
    {
        await System.StopAsync();
        Directory.Delete(_model, recursive: true);
    }
}

/// <summary>
/// Token accounting end to end with the real node: the issue's own probe (max_tokens beyond the context refused by the
/// node, the bucket untouched), n = 4 charged four completions, streams charged the node's usage without showing the
/// client usage it did not ask for, a cancelled stream charged only what was generated; and the node's refusals of
/// malformed requests (invalid UTF-8, every field given a wrong JSON type, logit_bias out of range) are the same 400
/// through the gateway as from the node alone.
/// </summary>
public sealed class TokenAccountingSystemTests(AccountingSystemFixture fixture) : IClassFixture<AccountingSystemFixture>
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    private HttpClient Gateway(string key)
    {
        // No draining of unread responses: disposing a stream closes the connection, as a client that goes away does.
        var client = new HttpClient(new SocketsHttpHandler { MaxResponseDrainSize = 0, ResponseDrainTimeout = TimeSpan.Zero })
        {
            BaseAddress = new Uri(fixture.System.GatewayUrl),
            Timeout = Bound,
        };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        return client;
    }

    private HttpClient Node() => new() { BaseAddress = new Uri(fixture.System.NodeUrl), Timeout = Bound };

    private static ByteArrayContent Json(byte[] body)
    {
        var content = new ByteArrayContent(body);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        return content;
    }

    private static ByteArrayContent Json(string body) => Json(Encoding.UTF8.GetBytes(body));

    private string Model => fixture.System.ModelId;

    /// <summary>The tenant's usage read-out once <paramref name="requests"/> requests are settled (bounded wait).</summary>
    private async Task<JsonElement> UsageAsync(string tenant, int requests)
    {
        using var admin = Gateway(AccountingSystemFixture.AdminKey);
        var deadline = DateTime.UtcNow + Bound;
        while (true)
        {
            var usage = JsonDocument.Parse(await admin.GetStringAsync($"/admin/tenants/{tenant}/usage")).RootElement;
            long settled = usage.GetProperty("last_minute").GetProperty("requests").GetInt64();
            if (settled == requests) return usage;
            Assert.True(settled < requests && DateTime.UtcNow < deadline, $"expected {requests} settled requests: {usage}");
            await Task.Delay(10);
        }
    }

    [Fact]
    public async Task MaxTokensBeyondTheContext_TheNodesRefusal_LeavesTheBucketWhereItWas()
    {
        using var gateway = Gateway(AccountingSystemFixture.KeyOf("clamp"));
        var huge = JsonSerializer.Serialize(new { model = Model, prompt = "The cat", max_tokens = 1_000_000_000 });
        for (int i = 1; i <= 2; i++)
        {
            using var refused = await gateway.PostAsync("/v1/completions", Json(huge));
            var text = await refused.Content.ReadAsStringAsync();
            Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
            var error = JsonDocument.Parse(text).RootElement.GetProperty("error");
            Assert.Equal("max_tokens", error.GetProperty("param").GetString());
            Assert.Contains("can be generated", error.GetProperty("message").GetString());
            var usage = await UsageAsync("clamp", i);
            Assert.Equal(AccountingSystemFixture.TokensPerMinute, usage.GetProperty("available_tokens").GetInt64());
            Assert.Equal(0, usage.GetProperty("last_minute").GetProperty("charged_tokens").GetInt64());
        }
        using var ok = await gateway.PostAsync("/v1/completions", Json(JsonSerializer.Serialize(new { model = Model, prompt = "The cat", max_tokens = 4, ignore_eos = true })));
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
    }

    [Fact]
    public async Task NFour_ChargedFourCompletionsAndThePromptOnce()
    {
        using var gateway = Gateway(AccountingSystemFixture.KeyOf("nfour"));
        using var response = await gateway.PostAsync("/v1/completions",
            Json(JsonSerializer.Serialize(new { model = Model, prompt = "Once upon a time", max_tokens = 5, n = 4, ignore_eos = true, temperature = 0.8, seed = 3 })));
        var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(4, body.GetProperty("choices").GetArrayLength());
        long prompt = body.GetProperty("usage").GetProperty("prompt_tokens").GetInt64();
        Assert.Equal(20, body.GetProperty("usage").GetProperty("completion_tokens").GetInt64());

        var minute = (await UsageAsync("nfour", 1)).GetProperty("last_minute");
        Assert.Equal(prompt, minute.GetProperty("prompt_tokens").GetInt64());
        Assert.Equal(20, minute.GetProperty("generated_tokens").GetInt64());
        Assert.Equal(prompt + 20, minute.GetProperty("charged_tokens").GetInt64());
    }

    [Fact]
    public async Task Stream_ChargedTheNodesUsage_TheClientSeesNoUsageItDidNotAskFor()
    {
        using var gateway = Gateway(AccountingSystemFixture.KeyOf("stream"));
        var request = JsonSerializer.Serialize(new
        {
            model = Model, messages = new[] { new { role = "user", content = "Hello" } }, max_tokens = 6, n = 2, ignore_eos = true, stream = true,
        });
        using var response = await gateway.PostAsync("/v1/chat/completions", Json(request));
        var text = await response.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.DoesNotContain("usage", text);
        Assert.EndsWith("data: [DONE]\n\n", text);

        var minute = (await UsageAsync("stream", 1)).GetProperty("last_minute");
        Assert.Equal(12, minute.GetProperty("generated_tokens").GetInt64());
        long prompt = minute.GetProperty("prompt_tokens").GetInt64();
        Assert.True(prompt > 0);
        Assert.Equal(prompt + 12, minute.GetProperty("charged_tokens").GetInt64());
    }

    [Fact]
    public async Task CancelledStream_ChargedWhatWasGenerated_TheRestRefunded()
    {
        using var gateway = Gateway(AccountingSystemFixture.KeyOf("cancel"));
        const int maxTokens = 1500;
        var request = JsonSerializer.Serialize(new
        {
            model = Model, prompt = "Once", max_tokens = maxTokens, ignore_eos = true, stream = true,
            stream_options = new { include_usage = true, continuous_usage_stats = true },
        });
        long seen = 0, prompt = 0;
        using (var response = await gateway.SendAsync(new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = Json(request) },
            HttpCompletionOption.ResponseHeadersRead))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(), Encoding.UTF8);
            int chunks = 0;
            while (chunks < 3 && await reader.ReadLineAsync().WaitAsync(Bound) is { } line)
            {
                if (!line.StartsWith("data: {", StringComparison.Ordinal)) continue;
                var usage = JsonDocument.Parse(line[6..]).RootElement.GetProperty("usage");
                seen = usage.GetProperty("generated_tokens").GetInt64();
                prompt = usage.GetProperty("prompt_tokens").GetInt64();
                chunks++;
            }
        }
        var minute = (await UsageAsync("cancel", 1)).GetProperty("last_minute");
        long generated = minute.GetProperty("generated_tokens").GetInt64();
        // Charged what the node reported generating by the last chunk the gateway passed on: at least what this client
        // saw, far from the 1500 reserved (the rest was refunded).
        Assert.InRange(generated, seen, maxTokens / 2);
        Assert.Equal(prompt, minute.GetProperty("prompt_tokens").GetInt64());
        Assert.Equal(prompt + generated, minute.GetProperty("charged_tokens").GetInt64());
    }

    public static TheoryData<RequestSurface.Case> WrongTypes()
    {
        var data = new TheoryData<RequestSurface.Case>();
        // The model id is the fixture's: "accounting" is the checkpoint folder's name.
        foreach (var c in RequestSurface.WrongTypes(typeof(CompletionRequestBody), typeof(ChatCompletionRequestBody), "accounting")) data.Add(c);
        return data;
    }

    private async Task<(int Status, string? Type, string? Code, string? Param)> RefusalAsync(HttpResponseMessage response)
    {
        var text = await response.Content.ReadAsStringAsync();
        var error = JsonDocument.Parse(text).RootElement.GetProperty("error");
        Assert.False(string.IsNullOrWhiteSpace(error.GetProperty("message").GetString()), text);
        return ((int)response.StatusCode, error.GetProperty("type").GetString(), error.GetProperty("code").GetString(), error.GetProperty("param").GetString());
    }

    private async Task AssertSame400Async(string route, byte[] body, string param)
    {
        using var node = Node();
        using var gateway = Gateway(fixture.System.DevKey);
        using var direct = await node.PostAsync(route, Json(body));
        using var proxied = await gateway.PostAsync(route, Json(body));
        var fromNode = await RefusalAsync(direct);
        Assert.Equal((400, "invalid_request_error", param), (fromNode.Status, fromNode.Type, fromNode.Param));
        Assert.Equal(fromNode, await RefusalAsync(proxied));
    }

    [Theory]
    [MemberData(nameof(WrongTypes))]
    public async Task WrongJsonType_NodeAndGateway_Same400NamingTheField(RequestSurface.Case c)
    {
        Assert.Equal("accounting", Model);
        await AssertSame400Async(c.Route, Encoding.UTF8.GetBytes(c.Body), c.Param);
    }

    [Theory]
    [InlineData("prompt", new byte[] { 0xff, 0xfe })]
    [InlineData("stop[0]", new byte[] { 0xc3 })]
    [InlineData("messages[0].content", new byte[] { 0xed, 0xb0, 0x80 })]
    public async Task InvalidUtf8_NodeAndGateway_Same400NamingTheField(string field, byte[] bad)
    {
        var (route, template) = field switch
        {
            "prompt" => ("/v1/completions", """{"model":"accounting","prompt":"a@@","max_tokens":2}"""),
            "stop[0]" => ("/v1/completions", """{"model":"accounting","prompt":"a","stop":["@@"],"max_tokens":2}"""),
            _ => ("/v1/chat/completions", """{"model":"accounting","messages":[{"role":"user","content":"@@"}],"max_tokens":2}"""),
        };
        var raw = Encoding.UTF8.GetBytes(template);
        int at = template.IndexOf("@@", StringComparison.Ordinal);
        await AssertSame400Async(route, [.. raw[..at], .. bad, .. raw[(at + 2)..]], field);
    }

    [Theory]
    [InlineData("""{"999999": 5}""")]
    [InlineData("""{"7": 250}""")]
    [InlineData("""{"7": -100.01}""")]
    [InlineData("""{"seven": 1}""")]
    public async Task LogitBiasOutOfRange_NodeAndGateway_Same400(string bias) =>
        await AssertSame400Async("/v1/completions", Encoding.UTF8.GetBytes($$"""{"model":"accounting","prompt":"a","max_tokens":2,"logit_bias":{{bias}}}"""), "logit_bias");
}
