using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Xunit;

namespace Serving.Inference.Node.Tests.Http;

/// <summary>Wire-level checks: SSE framing, [DONE], usage, error shapes and the params they name.</summary>
public sealed class RawHttpTests(SharedNode node) : IClassFixture<SharedNode>
{
    private HttpClient Http => node.Server.Http;

    private static object Completion(object? extra = null, bool stream = false)
    {
        var body = new Dictionary<string, object?>
        {
            ["model"] = NodeServer.ModelId, ["prompt"] = "Hello", ["max_tokens"] = 8, ["temperature"] = 0, ["stream"] = stream, ["ignore_eos"] = true,
        };
        if (extra is not null)
        {
            foreach (var p in extra.GetType().GetProperties()) body[p.Name] = p.GetValue(extra);
        }
        return body;
    }

    [Fact]
    public async Task CompletionsStream_SseFraming_ChunksThenFinishThenDone()
    {
        using var response = await Http.SendAsync(Sse.Post("v1/completions", Completion(stream: true)), HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType!.MediaType);
        var events = await Sse.ReadAllAsync(response);

        Assert.Equal("[DONE]", events[^1].Data);
        Assert.Equal(1, events.Count(e => e.Data == "[DONE]"));
        var chunks = events.Take(events.Count - 1).Select(e => e.Json).ToList();
        Assert.All(chunks, c =>
        {
            Assert.Equal("text_completion", (string)c["object"]!);
            Assert.StartsWith("cmpl-", (string)c["id"]!);
            Assert.Equal(NodeServer.ModelId, (string)c["model"]!);
        });
        Assert.Single(chunks.Select(c => (string)c["id"]!).Distinct());
        var finish = chunks.Select(c => c["choices"]![0]!["finish_reason"]).Where(f => f is not null).Select(f => (string)f!).ToList();
        Assert.Equal(["length"], finish);
        Assert.NotNull(chunks[^1]["choices"]![0]!["finish_reason"]);

        // The streamed text is what the same request returns without streaming.
        using var whole = await Http.SendAsync(Sse.Post("v1/completions", Completion()));
        var json = await Sse.JsonAsync(whole);
        Assert.Equal((string)json["choices"]![0]!["text"]!, Sse.Text(events));
    }

    [Fact]
    public async Task ChatStream_IncludeUsage_LastChunkCarriesUsageAndNoChoices()
    {
        var body = new
        {
            model = NodeServer.ModelId, messages = new[] { new { role = "user", content = "Hi" } }, max_tokens = 5, temperature = 0,
            ignore_eos = true, stream = true, stream_options = new { include_usage = true },
        };
        using var response = await Http.SendAsync(Sse.Post("v1/chat/completions", body), HttpCompletionOption.ResponseHeadersRead);
        var events = await Sse.ReadAllAsync(response);
        Assert.Equal("[DONE]", events[^1].Data);
        var chunks = events.Take(events.Count - 1).Select(e => e.Json).ToList();
        Assert.All(chunks, c => Assert.Equal("chat.completion.chunk", (string)c["object"]!));
        Assert.Equal("assistant", (string)chunks[0]["choices"]![0]!["delta"]!["role"]!);

        var usageChunk = chunks[^1];
        Assert.Empty(usageChunk["choices"]!.AsArray());
        var usage = usageChunk["usage"]!;
        Assert.Equal(5, (int)usage["completion_tokens"]!);
        Assert.True((int)usage["prompt_tokens"]! > 2);
        Assert.Equal((int)usage["prompt_tokens"]! + 5, (int)usage["total_tokens"]!);
        Assert.All(chunks.Take(chunks.Count - 1), c => Assert.True(c.ContainsKey("usage") && c["usage"] is null));
        Assert.Equal("length", (string)chunks[^2]["choices"]![0]!["finish_reason"]!);
    }

    [Fact]
    public async Task Completions_NonStreaming_UsageCountsPromptBytesAndGeneratedTokens()
    {
        using var response = await Http.SendAsync(Sse.Post("v1/completions", Completion(new { prompt = "abcdef", max_tokens = 7 })));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var json = await Sse.JsonAsync(response);
        Assert.Equal("text_completion", (string)json["object"]!);
        Assert.Equal(6, (int)json["usage"]!["prompt_tokens"]!); // byte tokenizer: one token per byte
        Assert.Equal(7, (int)json["usage"]!["completion_tokens"]!);
        Assert.Equal(13, (int)json["usage"]!["total_tokens"]!);
        Assert.Equal("length", (string)json["choices"]![0]!["finish_reason"]!);
    }

    [Fact]
    public async Task Completions_Logprobs_OneEntryPerTokenWithTopAlternatives()
    {
        using var response = await Http.SendAsync(Sse.Post("v1/completions", Completion(new { prompt = "xyz", max_tokens = 6, logprobs = 3 })));
        var lp = (await Sse.JsonAsync(response))["choices"]![0]!["logprobs"]!;
        var tokenLogprobs = lp["token_logprobs"]!.AsArray();
        Assert.Equal(6, tokenLogprobs.Count);
        Assert.Equal(6, lp["tokens"]!.AsArray().Count);
        Assert.All(tokenLogprobs, v => Assert.True((float)v! <= 0));
        Assert.All(lp["top_logprobs"]!.AsArray(), t => Assert.InRange(t!.AsObject().Count, 1, 3));
        // Greedy: the chosen token is the most likely one, so its logprob is the best alternative's.
        var firstTop = lp["top_logprobs"]![0]!.AsObject().Select(kv => (float)kv.Value!).Max();
        Assert.Equal(firstTop, (float)tokenLogprobs[0]!, 4);
    }

    [Fact]
    public async Task Completions_StopString_CutsBeforeItWithFinishStop()
    {
        using var full = await Http.SendAsync(Sse.Post("v1/completions", Completion(new { prompt = "The ", max_tokens = 40 })));
        var text = (string)(await Sse.JsonAsync(full))["choices"]![0]!["text"]!;
        // A stop string from the middle of the greedy output (avoid replacement characters of broken bytes).
        var at = Enumerable.Range(4, text.Length - 6).FirstOrDefault(i => text[i] != '\uFFFD' && text[i + 1] != '\uFFFD' && text.IndexOf(text.Substring(i, 2), StringComparison.Ordinal) == i, -1);
        Assert.True(at > 0, "no usable stop string in the output");
        var stop = text.Substring(at, 2);

        using var stopped = await Http.SendAsync(Sse.Post("v1/completions", Completion(new { prompt = "The ", max_tokens = 40, stop = new[] { stop } })));
        var choice = (await Sse.JsonAsync(stopped))["choices"]![0]!;
        Assert.Equal(text[..at], (string)choice["text"]!);
        Assert.Equal("stop", (string)choice["finish_reason"]!);
    }

    [Fact]
    public async Task Completions_NTwoWithSeed_ChoiceIEqualsSoloRunWithSeedPlusI()
    {
        object Body(int n, long seed) => Completion(new { prompt = "seeded", max_tokens = 12, temperature = 0.9, n, seed });
        using var both = await Http.SendAsync(Sse.Post("v1/completions", Body(2, 41)));
        var choices = (await Sse.JsonAsync(both))["choices"]!.AsArray();
        Assert.Equal(2, choices.Count);
        for (var i = 0; i < 2; i++)
        {
            using var solo = await Http.SendAsync(Sse.Post("v1/completions", Body(1, 41 + i)));
            var expected = (string)(await Sse.JsonAsync(solo))["choices"]![0]!["text"]!;
            Assert.Equal(expected, (string)choices.Single(c => (int)c!["index"]! == i)!["text"]!);
        }
        Assert.NotEqual((string)choices[0]!["text"]!, (string)choices[1]!["text"]!);
    }

    [Theory]
    [InlineData("no-such-model")]
    [InlineData("other:tiny")]
    public async Task UnknownModel_404WithParamModel(string model)
    {
        using var response = await Http.SendAsync(Sse.Post("v1/completions", Completion(new { model })));
        await AssertErrorAsync(response, HttpStatusCode.NotFound, "model", "invalid_request_error");
    }

    [Fact]
    public async Task AdapterOnANodeWithoutAdapterSource_404ModelNotFound()
    {
        using var response = await Http.SendAsync(Sse.Post("v1/chat/completions",
            new { model = NodeServer.ModelId + ":acme/support", messages = new[] { new { role = "user", content = "x" } } }));
        var error = await AssertErrorAsync(response, HttpStatusCode.NotFound, "model", "invalid_request_error");
        Assert.Equal("model_not_found", (string)error["code"]!);
    }

    [Fact]
    public async Task MaxTokensBeyondContext_400NamingTheParam()
    {
        using var completion = await Http.SendAsync(Sse.Post("v1/completions", Completion(new { max_tokens = 5000 })));
        await AssertErrorAsync(completion, HttpStatusCode.BadRequest, "max_tokens");

        using var chat = await Http.SendAsync(Sse.Post("v1/chat/completions",
            new { model = NodeServer.ModelId, messages = new[] { new { role = "user", content = "x" } }, max_completion_tokens = 5000 }));
        await AssertErrorAsync(chat, HttpStatusCode.BadRequest, "max_completion_tokens");
    }

    [Fact]
    public async Task MalformedJson_400()
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "v1/chat/completions")
        {
            Content = new StringContent("{\"model\": \"tiny\", \"messages\": [", Encoding.UTF8, "application/json"),
        };
        using var response = await Http.SendAsync(request);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var error = (await Sse.JsonAsync(response))["error"]!;
        Assert.Equal("invalid_json", (string)error["code"]!);
        Assert.Equal("invalid_request_error", (string)error["type"]!);
    }

    public static TheoryData<string, string> InvalidFields => new()
    {
        { """{"temperature": 3}""", "temperature" },
        { """{"temperature": "hot"}""", "temperature" },
        { """{"top_p": 0}""", "top_p" },
        { """{"presence_penalty": 5}""", "presence_penalty" },
        { """{"frequency_penalty": -3}""", "frequency_penalty" },
        { """{"n": 0}""", "n" },
        { """{"n": 99}""", "n" },
        { """{"max_tokens": 0}""", "max_tokens" },
        { """{"stop": ["a","b","c","d","e"]}""", "stop" },
        { """{"stop": 7}""", "stop" },
        { """{"logprobs": 9}""", "logprobs" },
        { """{"prompt": ""}""", "prompt" },
        { """{"prompt": [1, 2, 100000]}""", "prompt" },
        { """{"top_k": -5}""", "top_k" },
    };

    [Theory]
    [MemberData(nameof(InvalidFields))]
    public async Task Completions_InvalidField_400NamingIt(string overrides, string param)
    {
        var body = JsonNode.Parse("""{"model": "tiny", "prompt": "Hi", "max_tokens": 4}""")!.AsObject();
        foreach (var (k, v) in JsonNode.Parse(overrides)!.AsObject()) body[k] = v?.DeepClone();
        using var request = new HttpRequestMessage(HttpMethod.Post, "v1/completions") { Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json") };
        using var response = await Http.SendAsync(request);
        await AssertErrorAsync(response, HttpStatusCode.BadRequest, param);
    }

    [Fact]
    public async Task Chat_EmptyMessages_400NamingMessages()
    {
        using var response = await Http.SendAsync(Sse.Post("v1/chat/completions", new { model = NodeServer.ModelId, messages = Array.Empty<object>() }));
        await AssertErrorAsync(response, HttpStatusCode.BadRequest, "messages");
    }

    [Fact]
    public async Task Models_ListsTheBaseModel()
    {
        var json = JsonNode.Parse(await Http.GetStringAsync("v1/models"))!;
        Assert.Equal("list", (string)json["object"]!);
        var model = Assert.Single(json["data"]!.AsArray())!;
        Assert.Equal(NodeServer.ModelId, (string)model["id"]!);
        Assert.Equal("model", (string)model["object"]!);
    }

    [Fact]
    public async Task HealthAndStatusAndMetrics_Respond()
    {
        Assert.Equal(HttpStatusCode.OK, (await Http.GetAsync("health/live")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Http.GetAsync("health/ready")).StatusCode);

        var status = JsonNode.Parse(await Http.GetStringAsync("node/status"))!;
        Assert.Equal(NodeServer.ModelId, (string)status["model"]!);
        Assert.False(string.IsNullOrEmpty((string)status["version"]!));
        Assert.True((bool)status["accepting"]!);
        Assert.Equal(0, (int)status["queue_depth"]!);
        Assert.Equal(16, (int)status["kv"]!["slots"]!);
        Assert.Empty(status["adapters"]!["device"]!.AsArray());
        Assert.Empty(status["adapters"]!["host"]!.AsArray());
        Assert.Equal(0, (int)status["adapters"]!["slots"]!);

        using var _ = await Http.SendAsync(Sse.Post("v1/completions", Completion()));
        var metrics = await Http.GetStringAsync("metrics");
        Assert.Contains("serving_node_generation_tokens_total", metrics);
        Assert.Contains("serving_node_time_to_first_token_seconds_bucket", metrics);
        Assert.Contains("serving_node_time_per_output_token_seconds_bucket", metrics);
        Assert.Contains("serving_node_num_requests_waiting", metrics);
        Assert.Contains("serving_node_kv_cache_usage_perc", metrics);
        // The completion's prompt went through at least one engine step, and its tokens after it.
        Assert.Matches(@"serving_node_engine_steps_total\{[^}]*kind=""(prefill|mixed)""[^}]*\} [1-9]", metrics);
        Assert.Matches(@"serving_node_engine_tokens_total\{[^}]*kind=""(prefill|mixed)""[^}]*\} [1-9]", metrics);
        Assert.Contains("serving_node_engine_busy_time_seconds_total{", metrics);
    }

    internal static async Task<JsonNode> AssertErrorAsync(HttpResponseMessage response, HttpStatusCode status, string? param, string? type = null)
    {
        Assert.Equal(status, response.StatusCode);
        var error = (await Sse.JsonAsync(response))["error"]!;
        Assert.False(string.IsNullOrEmpty((string)error["message"]!));
        Assert.False(string.IsNullOrEmpty((string)error["type"]!));
        Assert.Equal(param, (string?)error["param"]);
        if (type is not null) Assert.Equal(type, (string)error["type"]!);
        return error;
    }
}
