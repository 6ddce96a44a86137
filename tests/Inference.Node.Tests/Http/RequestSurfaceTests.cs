using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Serving.Inference.Node.OpenAI;
using Serving.Tests.Shared;
using Xunit;

namespace Serving.Inference.Node.Tests.Http;

/// <summary>
/// No 500 on the request path of the node alone: text that is not UTF-8, a wrong JSON type in any field of the OpenAI
/// surface, <c>logit_bias</c> outside the vocabulary or [-100, 100] — each a 400 in OpenAI's shape naming the field —
/// and random mutations of valid requests never answered with a 5xx.
/// </summary>
public sealed class RequestSurfaceTests(SharedNode node) : IClassFixture<SharedNode>
{
    private HttpClient Http => node.Server.Http;

    private static ByteArrayContent Json(byte[] body)
    {
        var content = new ByteArrayContent(body);
        content.Headers.ContentType = new("application/json");
        return content;
    }

    public static TheoryData<RequestSurface.Case> WrongTypes()
    {
        var data = new TheoryData<RequestSurface.Case>();
        foreach (var c in RequestSurface.WrongTypes(typeof(CompletionRequestBody), typeof(ChatCompletionRequestBody), NodeServer.ModelId)) data.Add(c);
        return data;
    }

    [Fact]
    public void WrongTypes_CoverTheSurface()
    {
        // The generator reads the body types: a sample of what it must produce (guards the generator itself).
        var all = RequestSurface.WrongTypes(typeof(CompletionRequestBody), typeof(ChatCompletionRequestBody), "m").Select(c => c.Param).ToHashSet();
        foreach (var expected in new[] { "model", "prompt", "max_tokens", "n", "stream", "stream_options.include_usage", "stop", "logit_bias", "logprobs",
            "alignment.n", "early_exit.threshold", "merged_adapters.ids[0]", "messages[0].role", "messages[0].content", "max_completion_tokens", "seed" })
        {
            Assert.Contains(expected, all);
        }
    }

    [Theory]
    [MemberData(nameof(WrongTypes))]
    public async Task WrongJsonType_400NamingTheField(RequestSurface.Case c)
    {
        using var response = await Http.PostAsync(c.Route.TrimStart('/'), Json(Encoding.UTF8.GetBytes(c.Body)));
        await RawHttpTests.AssertErrorAsync(response, HttpStatusCode.BadRequest, c.Param, "invalid_request_error");
    }

    [Theory]
    [InlineData("v1/completions", "prompt", new byte[] { 0xff, 0xfe })]
    [InlineData("v1/completions", "prompt", new byte[] { 0xe2, 0x82 })] // cut short
    [InlineData("v1/completions", "stop[1]", new byte[] { 0xc0, 0xaf })] // overlong '/'
    [InlineData("v1/completions", "model", new byte[] { 0xed, 0xa0, 0x80 })] // a surrogate in UTF-8
    [InlineData("v1/chat/completions", "messages[0].content", new byte[] { 0x80 })]
    [InlineData("v1/chat/completions", "messages[0].content[0].text", new byte[] { 0xf8, 0x88, 0x80, 0x80, 0x80 })]
    public async Task InvalidUtf8_400NamingTheField(string route, string field, byte[] bad)
    {
        // "@@" in the body marks where the raw bytes go.
        var body = field switch
        {
            "prompt" => """{"model":"tiny","prompt":"a@@","max_tokens":2}""",
            "stop[1]" => """{"model":"tiny","prompt":"a","max_tokens":2,"stop":["x","@@"]}""",
            "model" => """{"model":"ti@@","prompt":"a","max_tokens":2}""",
            "messages[0].content" => """{"model":"tiny","messages":[{"role":"user","content":"@@"}],"max_tokens":2}""",
            _ => """{"model":"tiny","messages":[{"role":"user","content":[{"type":"text","text":"@@"}]}],"max_tokens":2}""",
        };
        var raw = Encoding.UTF8.GetBytes(body);
        int at = body.IndexOf("@@", StringComparison.Ordinal);
        byte[] bytes = [.. raw[..at], .. bad, .. raw[(at + 2)..]];
        using var response = await Http.PostAsync(route, Json(bytes));
        var error = await RawHttpTests.AssertErrorAsync(response, HttpStatusCode.BadRequest, field, "invalid_request_error");
        Assert.Equal("invalid_json", (string)error["code"]!);
        Assert.Contains("UTF-8", (string)error["message"]!);
    }

    [Theory]
    [InlineData("""{"model":"tiny","messages":[null],"max_tokens":2}""", "messages[0]")]
    [InlineData("""{"model":"tiny","messages":[{"role":"user","content":[{"type":5}]}],"max_tokens":2}""", "messages[0].content")]
    [InlineData("""{"model":"tiny","messages":[{"role":"user","content":[{"type":"text","text":5}]}],"max_tokens":2}""", "messages[0].content")]
    [InlineData("""{"model":"tiny","messages":[{"role":"user","content":[5]}],"max_tokens":2}""", "messages[0].content")]
    [InlineData("""{"model":"tiny","messages":[{"role":"user","content":{"type":"text"}}],"max_tokens":2}""", "messages[0].content")]
    public async Task UnexpectedValuesInsideMessages_400NamingTheField(string body, string param)
    {
        using var response = await Http.PostAsync("v1/chat/completions", Json(Encoding.UTF8.GetBytes(body)));
        await RawHttpTests.AssertErrorAsync(response, HttpStatusCode.BadRequest, param, "invalid_request_error");
    }

    [Fact]
    public async Task LoneSurrogateEscape_400NamingTheField()
    {
        using var response = await Http.PostAsync("v1/chat/completions",
            Json(Encoding.UTF8.GetBytes("""{"model":"tiny","messages":[{"role":"user","content":"a\udc00"}],"max_tokens":2}""")));
        await RawHttpTests.AssertErrorAsync(response, HttpStatusCode.BadRequest, "messages[0].content");
    }

    [Theory]
    [InlineData("""{"300": 1}""")] // the tiny model's vocabulary is [0, 300)
    [InlineData("""{"-1": 1}""")]
    [InlineData("""{"99999999999": 1}""")]
    [InlineData("""{"5": 100.5}""")]
    [InlineData("""{"5": -101}""")]
    [InlineData("""{"5": 1e300}""")]
    [InlineData("""{"five": 1}""")]
    [InlineData("""{"5": 1, "05": 2}""")]
    public async Task LogitBias_OutOfRange_400NamingIt(string bias)
    {
        var body = $$"""{"model":"tiny","prompt":"Hi","max_tokens":2,"logit_bias":{{bias}}}""";
        using var response = await Http.PostAsync("v1/completions", Json(Encoding.UTF8.GetBytes(body)));
        var error = await RawHttpTests.AssertErrorAsync(response, HttpStatusCode.BadRequest, "logit_bias", "invalid_request_error");
        Assert.Contains("logit_bias", (string)error["message"]!);
    }

    [Fact]
    public async Task LogitBias_Applied_ForcesAndBansTokens()
    {
        async Task<string[]> TokensAsync(string? bias)
        {
            var body = JsonNode.Parse("""{"model":"tiny","prompt":"Hello","max_tokens":4,"temperature":0,"ignore_eos":true,"logprobs":0}""")!.AsObject();
            if (bias is not null) body["logit_bias"] = JsonNode.Parse(bias);
            using var response = await Http.PostAsync("v1/completions", Json(Encoding.UTF8.GetBytes(body.ToJsonString())));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var json = await Sse.JsonAsync(response);
            return json["choices"]![0]!["logprobs"]!["tokens"]!.AsArray().Select(t => (string)t!).ToArray();
        }

        // +100 on one id makes it the argmax at every step: four times the same token, whatever the model prefers.
        var forced = await TokensAsync("""{"120": 100}""");
        Assert.Equal(4, forced.Length);
        Assert.Single(forced.Distinct());
        var forcedOther = await TokensAsync("""{"121": 100}""");
        Assert.Single(forcedOther.Distinct());
        Assert.NotEqual(forced[0], forcedOther[0]);
        // -100 bans it: it never appears, even where greedy decoding chose it.
        var plain = await TokensAsync(null);
        Assert.Equal(plain, await TokensAsync("""{"120": 0, "121": 0}""")); // a bias of 0 changes nothing
        var banned = await TokensAsync("""{"120": -100}""");
        Assert.DoesNotContain(forced[0], banned);
        var bannedBoth = await TokensAsync("""{"120": -100, "121": -100}""");
        Assert.DoesNotContain(forced[0], bannedBoth);
        Assert.DoesNotContain(forcedOther[0], bannedBoth);
    }

    [Fact]
    public async Task ContinuousUsageStats_EveryChunkCarriesTheCountsSoFar()
    {
        var body = """{"model":"tiny","prompt":"Hello","max_tokens":6,"temperature":0,"ignore_eos":true,"n":2,"stream":true,"stream_options":{"include_usage":true,"continuous_usage_stats":true}}""";
        using var response = await Http.SendAsync(new HttpRequestMessage(HttpMethod.Post, "v1/completions") { Content = Json(Encoding.UTF8.GetBytes(body)) },
            HttpCompletionOption.ResponseHeadersRead);
        var chunks = (await Sse.ReadAllAsync(response)).Where(e => e.Data != "[DONE]").Select(e => e.Json).ToList();
        var generated = chunks.Select(c => (int)c["usage"]!["generated_tokens"]!).ToList();
        Assert.All(chunks, c => Assert.Equal((int)c["usage"]!["prompt_tokens"]!, (int)chunks[^1]["usage"]!["prompt_tokens"]!));
        Assert.Equal(generated.Order().ToList(), generated); // never decreases
        Assert.True(generated[0] >= 1);
        Assert.Empty(chunks[^1]["choices"]!.AsArray());
        Assert.Equal(12, generated[^1]); // 2 choices × 6
        Assert.Equal(12, (int)chunks[^1]["usage"]!["completion_tokens"]!);
    }

    private static readonly (string Outer, string Inner)[] Nested =
    [
        ("messages", "role"), ("messages", "content"), ("messages", "name"), ("alignment", "method"), ("alignment", "n"), ("alignment", "k"),
        ("alignment", "variants"), ("early_exit", "mode"), ("early_exit", "threshold"), ("early_exit", "criterion"), ("stream_options", "include_usage"),
        ("stream_options", "continuous_usage_stats"), ("merged_adapters", "ids"), ("merged_adapters", "weights"), ("logit_bias", "7"),
    ];

    /// <summary>
    /// Random mutations (a field replaced by a value of another type or out of range, a field dropped, nesting) of valid
    /// completions and chat bodies: the node answers 200 or a 4xx with OpenAI's error shape, never a 5xx.
    /// </summary>
    [Theory]
    [InlineData(7)]
    [InlineData(8)]
    [InlineData(9)]
    public async Task RandomMutations_NeverA5xx(int seed)
    {
        var random = new Random(seed);
        JsonNode?[] values =
        [
            null, true, false, "", "x", "\u00e9\ud83d\ude00", 0, -1, 1, 2, 3, 1.5, -0.0, 1e300, -1e300, 2147483648L, long.MaxValue,
            new JsonArray(), new JsonArray(1, 2), new JsonArray("a", "b"), new JsonArray(new JsonArray(1)), new JsonObject(),
            new JsonObject { ["method"] = "best_of_n", ["n"] = 2 }, new JsonObject { ["5"] = 1 }, new JsonObject { ["include_usage"] = true },
            new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "x" }), new JsonArray(new JsonObject { ["type"] = 5 }),
            new JsonArray(new JsonObject { ["type"] = "text", ["text"] = 5 }), new JsonArray(new JsonObject { ["type"] = "image_url" }), 120, 299, 300,
        ];
        string[] fields =
        [
            "model", "prompt", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stream", "stream_options", "stop", "seed",
            "presence_penalty", "frequency_penalty", "user", "top_k", "min_p", "repetition_penalty", "ignore_eos", "skip_special_tokens", "logit_bias",
            "logprobs", "top_logprobs", "echo", "best_of", "suffix", "merged_adapters", "reward_head", "return_token_rewards", "alignment", "early_exit",
            "add_generation_prompt",
        ];
        var statuses = new Dictionary<int, int>();
        for (int i = 0; i < 200; i++)
        {
            bool chat = random.Next(2) == 0;
            var body = RequestSurface.ValidBody(chat, NodeServer.ModelId);
            for (int m = random.Next(1, 4); m > 0; m--)
            {
                string field = fields[random.Next(fields.Length)];
                if (random.Next(8) == 0) body.Remove(field);
                else body[field] = values[random.Next(values.Length)]?.DeepClone();
            }
            // And inside the objects of the surface.
            if (random.Next(2) == 0)
            {
                var (outer, inner) = Nested[random.Next(Nested.Length)];
                var target = outer == "messages"
                    ? body["messages"] is JsonArray { Count: > 0 } list && list[0] is JsonObject first ? first : null
                    : body[outer] as JsonObject ?? (JsonObject)(body[outer] = new JsonObject());
                if (target is not null) target[inner] = values[random.Next(values.Length)]?.DeepClone();
            }
            // Keep generation short: the point is the request path, not decoding.
            if (body["max_tokens"] is JsonValue v && v.TryGetValue(out int mt) && mt > 4) body["max_tokens"] = 4;
            body.Remove("max_completion_tokens");
            using var response = await Http.PostAsync(chat ? "v1/chat/completions" : "v1/completions", Json(Encoding.UTF8.GetBytes(body.ToJsonString())));
            int status = (int)response.StatusCode;
            statuses[status] = statuses.GetValueOrDefault(status) + 1;
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(status < 500, $"{status} for {body.ToJsonString()}: {text}");
            if (status >= 400)
            {
                var error = JsonNode.Parse(text)!["error"]!;
                Assert.False(string.IsNullOrEmpty((string?)error["message"]), text);
            }
        }
        Assert.True(statuses.GetValueOrDefault(200) > 0 && statuses.Keys.Any(s => s >= 400), string.Join(", ", statuses));
    }
}
