using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using Xunit;

namespace Serving.Inference.Node.Tests.Http;

/// <summary>
/// Rows of docs/bad-input.md that no other test covered: the transport's limits (body and header size, a client that
/// sends its body too slowly), JSON nesting, non-finite and huge numbers, a prompt longer than the context, and the
/// documented answer to unknown fields. Each goes over real HTTP to a node on loopback.
/// </summary>
public sealed class BadInputTests(SharedNode node) : IClassFixture<SharedNode>
{
    private HttpClient Http => node.Server.Http;

    private static HttpRequestMessage Raw(string route, string body) =>
        new(HttpMethod.Post, route) { Content = new StringContent(body, Encoding.UTF8, "application/json") };

    [Theory]
    [InlineData(100)]   // past System.Text.Json's default depth of 64
    [InlineData(300)]   // past the UTF-8 check's depth of 256
    [InlineData(20000)]
    public async Task NestedJson_DeeperThanTheLimit_400InvalidJson(int depth)
    {
        var body = """{"model":"tiny","max_tokens":2,"prompt":"Hi","stop":""" + new string('[', depth) + new string(']', depth) + "}";
        using var response = await Http.SendAsync(Raw("v1/completions", body));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var error = (await Sse.JsonAsync(response))["error"]!;
        Assert.Equal("invalid_json", (string)error["code"]!);
    }

    public static TheoryData<string, string?, string?> BadNumbers => new()
    {
        // body fields, the param the error names, the code (null: none, a plain invalid parameter)
        { """{"temperature": NaN}""", "temperature", "invalid_json" },
        { """{"temperature": "NaN"}""", "temperature", null }, // numbers in strings are read (web defaults), then validated
        { """{"temperature": Infinity}""", "temperature", "invalid_json" },
        { """{"temperature": 1e39}""", "temperature", null }, // float overflow: +inf, refused by the range check
        { """{"temperature": -0.5}""", "temperature", null },
        { """{"temperature": 1e30}""", "temperature", null },
        { """{"top_p": 1.5}""", "top_p", null },
        { """{"top_p": -0.1}""", "top_p", null },
        { """{"min_p": 2}""", "min_p", null },
        { """{"top_k": 1e10}""", "top_k", "invalid_json" },
        { """{"repetition_penalty": 0}""", "repetition_penalty", null },
        { """{"presence_penalty": -1e20}""", "presence_penalty", null },
        { """{"max_tokens": -1}""", "max_tokens", null },
        { """{"max_tokens": 2147483648}""", "max_tokens", "invalid_json" },
        { """{"max_tokens": 1000000}""", "max_tokens", null },
        { """{"n": 1000000}""", "n", null },
        { """{"best_of": 1000000}""", "best_of", null },
        { """{"seed": 1.5}""", "seed", "invalid_json" },
    };

    [Theory]
    [MemberData(nameof(BadNumbers))]
    public async Task NonFiniteNegativeOrHugeParameter_400NamingIt(string fields, string? param, string? code)
    {
        var body = """{"model":"tiny","prompt":"Hi","max_tokens":2,""" + fields.TrimStart('{');
        using var response = await Http.SendAsync(Raw("v1/completions", body));
        var error = await RawHttpTests.AssertErrorAsync(response, HttpStatusCode.BadRequest, param, "invalid_request_error");
        Assert.Equal(code, (string?)error["code"]);
    }

    [Fact]
    public async Task Chat_TopLogprobsBeyondTwenty_400NamingIt()
    {
        using var response = await Http.SendAsync(Sse.Post("v1/chat/completions", new
        {
            model = NodeServer.ModelId, max_tokens = 2, logprobs = true, top_logprobs = 21, messages = new[] { new { role = "user", content = "Hi" } },
        }));
        await RawHttpTests.AssertErrorAsync(response, HttpStatusCode.BadRequest, "top_logprobs");
    }

    [Fact]
    public async Task LogitBias_MoreEntriesThanTheVocabulary_400NamingIt()
    {
        var bias = new JsonObject();
        for (var id = 0; id < 5000; id++) bias[id.ToString(System.Globalization.CultureInfo.InvariantCulture)] = 1;
        var body = new JsonObject { ["model"] = NodeServer.ModelId, ["prompt"] = "Hi", ["max_tokens"] = 2, ["logit_bias"] = bias };
        using var response = await Http.SendAsync(Raw("v1/completions", body.ToJsonString()));
        await RawHttpTests.AssertErrorAsync(response, HttpStatusCode.BadRequest, "logit_bias");
    }

    [Fact]
    public async Task Prompt_LongerThanTheContext_400NamingPrompt()
    {
        var ids = string.Join(',', Enumerable.Range(0, 2100).Select(i => i % 250));
        using var response = await Http.SendAsync(Raw("v1/completions", $$"""{"model":"tiny","max_tokens":1,"prompt":[{{ids}}]}"""));
        await RawHttpTests.AssertErrorAsync(response, HttpStatusCode.BadRequest, "prompt");
    }

    [Fact]
    public async Task UnknownFields_AreIgnored_200()
    {
        using var response = await Http.SendAsync(Raw("v1/completions",
            """{"model":"tiny","prompt":"Hi","max_tokens":2,"temperature":0,"frobnicate":{"x":[1,2]},"service_tier":"auto","metadata":{"k":"v"}}"""));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text_completion", (string)(await Sse.JsonAsync(response))["object"]!);
    }

    [Fact]
    public async Task Headers_OverKestrelsLimit_431()
    {
        using var request = Raw("v1/completions", """{"model":"tiny","prompt":"Hi","max_tokens":1}""");
        request.Headers.Add("X-Padding", new string('a', 40 * 1024)); // Kestrel's MaxRequestHeadersTotalSize is 32 KiB
        using var response = await Http.SendAsync(request);
        Assert.Equal(HttpStatusCode.RequestHeaderFieldsTooLarge, response.StatusCode);
    }

    [Fact]
    public async Task Body_DeclaredOverKestrelsLimit_413NotA500()
    {
        // Kestrel's MaxRequestBodySize is 30,000,000 bytes by default; the body is refused on its declared length.
        var answer = await RawExchangeAsync(contentLength: 30_000_001, sent: """{"model":"tiny","prompt":"Hi","max_tokens":1}""");
        Assert.True(answer.StartsWith("HTTP/1.1 413", StringComparison.Ordinal), answer);
        Assert.Contains("\"code\":\"request_too_large\"", answer);
    }

    [Fact]
    public async Task SlowBody_BelowKestrelsMinimumDataRate_408()
    {
        // Kestrel's MinRequestBodyDataRate (240 bytes/s after a 5 s grace) ends a body that trickles: the client
        // declares 100 kB, sends 20 bytes and stalls. No clock is raced: the test waits for the server's answer.
        var answer = await RawExchangeAsync(contentLength: 100_000, sent: """{"model":"tiny","pr""");
        Assert.True(answer.StartsWith("HTTP/1.1 408", StringComparison.Ordinal), answer);
        Assert.Contains("\"code\":\"request_timeout\"", answer);
    }

    /// <summary>Sends a request head declaring <paramref name="contentLength"/> and the first body bytes, then reads the answer until the server closes the connection.</summary>
    private async Task<string> RawExchangeAsync(long contentLength, string sent)
    {
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(node.Server.Address.Host, node.Server.Address.Port);
        var stream = tcp.GetStream();
        var head = $"POST /v1/completions HTTP/1.1\r\nHost: {node.Server.Address.Authority}\r\nContent-Type: application/json\r\nContent-Length: {contentLength}\r\n\r\n";
        await stream.WriteAsync(Encoding.ASCII.GetBytes(head + sent));
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        var received = new MemoryStream();
        var buffer = new byte[4096];
        try
        {
            int read;
            while ((read = await stream.ReadAsync(buffer, timeout.Token)) > 0) received.Write(buffer, 0, read);
        }
        catch (IOException)
        {
            // A reset after the answer: what arrived is the answer.
        }
        return Encoding.ASCII.GetString(received.ToArray());
    }
}
