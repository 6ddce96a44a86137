using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Json.Schema;
using OpenAI;
using OpenAI.Chat;
using Xunit;
using System.ClientModel;

namespace Serving.Inference.Node.Tests.Tools;

/// <summary>The demo model (it has an end-of-sequence token, which constrained decoding needs) served as <c>org/demo</c>.</summary>
public sealed class DemoToolNode : IAsyncLifetime
{
    public const string ModelId = "org/demo";

    public NodeServer Server { get; private set; } = null!;

    public async Task InitializeAsync() => Server = await NodeServer.StartAsync(new Dictionary<string, string?>
    {
        ["Node:ModelPath"] = Alignment.DemoRewardNode.Demo,
        ["Node:ModelId"] = ModelId,
        ["Node:MaxContext"] = "512",
    });

    public async Task DisposeAsync() => await Server.DisposeAsync();
}

/// <summary>
/// Tool calling on a real node (the demo model) through the official OpenAI .NET client and raw
/// HTTP. The model never calls a tool on its own: calls are forced (tool_choice required / named, through the
/// constrained decoder), or, for auto mode, the output is pinned to a Hermes call with guided_choice. Arguments are
/// checked with an independent validator (JsonSchema.Net).
/// </summary>
public sealed class ToolCallHttpTests(DemoToolNode node) : IClassFixture<DemoToolNode>
{
    // Small schemas: the demo model's context is 512 tokens and its tokenizer spends many on JSON.
    internal const string WeatherSchema = """
        {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}, "unit": {"enum": ["c", "f"]}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
         "required": ["city", "unit"], "additionalProperties": false}
        """;

    internal const string TimeSchema = """
        {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"], "additionalProperties": false}
        """;

    private ChatClient Chat => new OpenAIClient(new ApiKeyCredential("unused"), new OpenAIClientOptions { Endpoint = new Uri(node.Server.Address, "v1") })
        .GetChatClient(DemoToolNode.ModelId);

    private static ChatCompletionOptions Options(ChatToolChoice choice, float temperature = 0f, long? seed = null, bool weather = true)
    {
        var options = new ChatCompletionOptions { Temperature = temperature, MaxOutputTokenCount = 48, ToolChoice = choice };
#pragma warning disable OPENAI001 // Seed is marked experimental in the client
        if (seed is long s) options.Seed = s;
#pragma warning restore OPENAI001
        if (weather) options.Tools.Add(ChatTool.CreateFunctionTool("get_weather", null, BinaryData.FromString(WeatherSchema)));
        options.Tools.Add(ChatTool.CreateFunctionTool("get_time", null, BinaryData.FromString(TimeSchema)));
        return options;
    }

    internal static void AssertValid(string schema, string arguments)
    {
        var result = JsonSchema.FromText(schema).Evaluate(JsonNode.Parse(arguments), new EvaluationOptions { OutputFormat = OutputFormat.List });
        Assert.True(result.IsValid, $"arguments {arguments} do not validate: {string.Join("; ", result.Details?.Where(d => d.Errors is not null).SelectMany(d => d.Errors!.Values) ?? [])}");
    }

    private static string SchemaOf(string function) => function == "get_weather" ? WeatherSchema : TimeSchema;

    [Fact]
    public async Task DotNetClient_RequiredRoundTrip_CallThenToolResultThenAnswer()
    {
        List<ChatMessage> messages = [new UserChatMessage("What is the weather in Paris?")];
        ChatCompletion first = await Chat.CompleteChatAsync(messages, Options(ChatToolChoice.CreateRequiredChoice(), weather: false));

        Assert.Equal(ChatFinishReason.ToolCalls, first.FinishReason);
        Assert.NotEmpty(first.ToolCalls);
        foreach (var call in first.ToolCalls)
        {
            Assert.StartsWith("call_", call.Id);
            Assert.Contains(call.FunctionName, new[] { "get_weather", "get_time" });
            AssertValid(SchemaOf(call.FunctionName), call.FunctionArguments.ToString());
        }

        messages.Add(new AssistantChatMessage(first));
        foreach (var call in first.ToolCalls) messages.Add(new ToolChatMessage(call.Id, "{\"temperature\": 21}"));
        ChatCompletion answer = await Chat.CompleteChatAsync(messages, Options(ChatToolChoice.CreateNoneChoice(), weather: false));

        Assert.Empty(answer.ToolCalls);
        Assert.Contains(answer.FinishReason, new[] { ChatFinishReason.Stop, ChatFinishReason.Length });
        Assert.NotEmpty(answer.Content);
        // The tool result reached the prompt: the second prompt is longer than the first by at least the call and the result.
        Assert.True(answer.Usage.InputTokenCount > first.Usage.InputTokenCount + 20, $"{answer.Usage.InputTokenCount} vs {first.Usage.InputTokenCount}");
    }

    [Fact]
    public async Task DotNetClient_NamedFunctionStreaming_ToolCallDeltasOnly()
    {
        List<ChatMessage> messages = [new UserChatMessage("Time in Berlin?")];
        var ids = new Dictionary<int, string>();
        var names = new Dictionary<int, string>();
        var args = new Dictionary<int, StringBuilder>();
        var content = new StringBuilder();
        ChatFinishReason? finish = null;
        await foreach (var update in Chat.CompleteChatStreamingAsync(messages, Options(ChatToolChoice.CreateFunctionChoice("get_time"), weather: false)))
        {
            foreach (var part in update.ContentUpdate) content.Append(part.Text);
            foreach (var t in update.ToolCallUpdates)
            {
                if (t.ToolCallId is { } id) ids[t.Index] = id;
                if (t.FunctionName is { } name) names[t.Index] = name;
                if (!args.TryGetValue(t.Index, out var sb)) args[t.Index] = sb = new StringBuilder();
                if (t.FunctionArgumentsUpdate is { } a) sb.Append(a.ToString());
            }
            finish ??= update.FinishReason;
        }

        Assert.Equal(ChatFinishReason.ToolCalls, finish);
        Assert.Equal("", content.ToString()); // the forced call's JSON never shows as content
        Assert.Equal("get_time", Assert.Single(names).Value);
        Assert.StartsWith("call_", ids[0]);
        AssertValid(TimeSchema, args[0].ToString());

        // Round trip: the streamed call and its result go back in; the answer streams as text.
        messages.Add(new AssistantChatMessage([ChatToolCall.CreateFunctionToolCall(ids[0], names[0], BinaryData.FromString(args[0].ToString()))]));
        messages.Add(new ToolChatMessage(ids[0], "12:00"));
        var answer = new StringBuilder();
        ChatFinishReason? answerFinish = null;
        await foreach (var update in Chat.CompleteChatStreamingAsync(messages, Options(ChatToolChoice.CreateAutoChoice(), weather: false)))
        {
            foreach (var part in update.ContentUpdate) answer.Append(part.Text);
            Assert.Empty(update.ToolCallUpdates);
            answerFinish ??= update.FinishReason;
        }
        Assert.Contains(answerFinish, new ChatFinishReason?[] { ChatFinishReason.Stop, ChatFinishReason.Length });
        Assert.NotEqual("", answer.ToString());
    }

    /// <summary>
    /// Twenty sampled tries per tool set (T = 1, seeds 1–20, parallel_tool_calls alternating): with both tools (48
    /// tokens: within the demo model's 512-token context only get_time's call fits, as the budget rule counts a byte as a
    /// token) and with get_weather alone (80 tokens), every try is a call whose arguments validate.
    /// </summary>
    [Fact]
    public async Task Required_TwentyTriesAtTemperatureOne_EachACallWhoseArgumentsValidate()
    {
        foreach (var weatherOnly in new[] { false, true })
        {
            var calls = new HashSet<string>();
            for (var seed = 1; seed <= 20; seed++)
            {
                var options = Options(ChatToolChoice.CreateRequiredChoice(), temperature: 1f, seed: seed);
                options.AllowParallelToolCalls = seed % 2 == 0;
                if (weatherOnly)
                {
                    options.Tools.RemoveAt(1); // get_time
                    options.MaxOutputTokenCount = 80;
                }
                ChatCompletion c = await Chat.CompleteChatAsync([new UserChatMessage("Weather or time, please.")], options);
                Assert.Equal(ChatFinishReason.ToolCalls, c.FinishReason);
                Assert.NotEmpty(c.ToolCalls);
                if (seed % 2 == 1) Assert.Single(c.ToolCalls); // parallel_tool_calls: false holds it to one call
                foreach (var call in c.ToolCalls)
                {
                    Assert.Contains(call.FunctionName, weatherOnly ? ["get_weather"] : new[] { "get_weather", "get_time" });
                    AssertValid(SchemaOf(call.FunctionName), call.FunctionArguments.ToString());
                    calls.Add(call.FunctionName + call.FunctionArguments);
                }
            }
            // The tries sampled: not one fixed call twenty times.
            Assert.True(calls.Count >= 2, $"only {calls.Count} distinct calls in 20 tries: {string.Join(" | ", calls)}");
        }
    }

    /// <summary>Auto mode reads the model's own format: the output is pinned to a Hermes call (guided_choice) to stand for a model that calls.</summary>
    [Fact]
    public async Task Auto_HermesOutput_ParsedIntoToolCalls()
    {
        const string output = "Checking.\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"zone\": \"CET\"}}\n</tool_call>";
        var body = Body(output, stream: false);
        using var response = await node.Server.Http.PostAsJsonAsync("/v1/chat/completions", body);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, text);
        var json = JsonDocument.Parse(text).RootElement;
        var choice = json.GetProperty("choices")[0];
        Assert.Equal("tool_calls", choice.GetProperty("finish_reason").GetString());
        var message = choice.GetProperty("message");
        Assert.Equal("Checking.", message.GetProperty("content").GetString());
        var call = Assert.Single(message.GetProperty("tool_calls").EnumerateArray());
        Assert.Equal("function", call.GetProperty("type").GetString());
        Assert.Equal("get_time", call.GetProperty("function").GetProperty("name").GetString());
        AssertValid(TimeSchema, call.GetProperty("function").GetProperty("arguments").GetString()!);
        Assert.Equal("CET", JsonDocument.Parse(call.GetProperty("function").GetProperty("arguments").GetString()!).RootElement.GetProperty("zone").GetString());
    }

    [Fact]
    public async Task Auto_HermesOutputStreamed_ContentBeforeTheCallThenOneToolCallDelta()
    {
        const string output = "Checking.\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"zone\": \"UTC\"}}\n</tool_call>";
        using var response = await node.Server.Http.PostAsJsonAsync("/v1/chat/completions", Body(output, stream: true));
        Assert.True(response.StatusCode == HttpStatusCode.OK, await response.Content.ReadAsStringAsync());
        var content = new StringBuilder();
        var calls = new List<JsonElement>();
        string? finish = null;
        foreach (var line in (await response.Content.ReadAsStringAsync()).Split('\n'))
        {
            if (!line.StartsWith("data: {", StringComparison.Ordinal)) continue;
            var chunk = JsonDocument.Parse(line["data: ".Length..]).RootElement;
            foreach (var choice in chunk.GetProperty("choices").EnumerateArray())
            {
                var delta = choice.GetProperty("delta");
                if (delta.TryGetProperty("content", out var c)) content.Append(c.GetString());
                if (delta.TryGetProperty("tool_calls", out var t)) calls.AddRange(t.EnumerateArray().Select(e => e.Clone()));
                if (choice.GetProperty("finish_reason").ValueKind == JsonValueKind.String) finish = choice.GetProperty("finish_reason").GetString();
            }
        }
        Assert.Equal("Checking.\n", content.ToString()); // nothing of the call leaked as content
        var call = Assert.Single(calls);
        Assert.Equal(0, call.GetProperty("index").GetInt32());
        Assert.Equal("get_time", call.GetProperty("function").GetProperty("name").GetString());
        Assert.Equal("{\"zone\": \"UTC\"}", call.GetProperty("function").GetProperty("arguments").GetString());
        Assert.Equal("tool_calls", finish);
    }

    private static Dictionary<string, object?> Body(string pinnedOutput, bool stream) => new()
    {
        ["model"] = DemoToolNode.ModelId,
        ["messages"] = new object[] { new { role = "user", content = "Weather in Oslo?" } },
        ["tools"] = new object[]
        {
            new { type = "function", function = new { name = "get_time", parameters = JsonDocument.Parse(TimeSchema).RootElement } },
        },
        ["tool_choice"] = "auto",
        ["guided_choice"] = new[] { pinnedOutput },
        ["stream"] = stream,
    };

    [Theory]
    [InlineData("""{"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "g"}}}""", "tool_choice")]
    [InlineData("""{"tools": {"type": "function"}}""", "tools")]
    [InlineData("""{"tools": [{"type": "retrieval"}]}""", "tools[0].type")]
    [InlineData("""{"tools": [{"type": "function", "function": {"name": "has space"}}]}""", "tools[0].function.name")]
    [InlineData("""{"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]}""", "tools[0].function.parameters.type")]
    [InlineData("""{"tools": [{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}]}""", "tools[1].function.name")]
    [InlineData("""{"tool_choice": "required"}""", "tool_choice")]
    [InlineData("""{"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "sometimes"}""", "tool_choice")]
    [InlineData("""{"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "string", "pattern": "(a"}}}}}], "tool_choice": "required"}""", "tools")]
    public async Task BadTools_400NamingTheField(string fields, string param)
    {
        var body = "{\"model\": \"org/demo\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], " + fields[1..];
        using var response = await node.Server.Http.PostAsync("/v1/chat/completions", new StringContent(body, Encoding.UTF8, "application/json"));
        var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal(param, json.GetProperty("error").GetProperty("param").GetString());
        Assert.Equal("invalid_request_error", json.GetProperty("error").GetProperty("type").GetString());
    }

    [Theory]
    [InlineData("""[{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_x", "content": "1"}]""", "messages[1].tool_call_id")]
    [InlineData("""[{"role": "user", "content": "hi"}, {"role": "tool", "content": "1"}]""", "messages[1].tool_call_id")]
    [InlineData("""[{"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": {}}}]}]""", "messages[0].tool_calls[0].function.arguments")]
    [InlineData("""[{"role": "user", "content": "hi", "tool_calls": []}]""", "messages[0].tool_calls")]
    public async Task BadToolMessages_400NamingTheField(string messages, string param)
    {
        var body = "{\"model\": \"org/demo\", \"max_tokens\": 2, \"messages\": " + messages + "}";
        using var response = await node.Server.Http.PostAsync("/v1/chat/completions", new StringContent(body, Encoding.UTF8, "application/json"));
        var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal(param, json.GetProperty("error").GetProperty("param").GetString());
    }

    /// <summary>A template that reads <c>tools</c> and <c>tool_calls</c> gets them as variables (seen through the template's own raise_exception).</summary>
    [Fact]
    public async Task TemplateReadingTools_GetsToolsAndCallsAsVariables()
    {
        var body = """
            {"model": "org/demo", "max_tokens": 2,
             "chat_template": "{{ raise_exception(tools[0].function.name ~ '|' ~ messages[1].tool_calls[0].function.arguments.zone ~ '|' ~ messages[2].tool_call_id) }}",
             "tools": [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}],
             "messages": [{"role": "user", "content": "time?"},
                          {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{\"zone\": \"CET\"}"}}]},
                          {"role": "tool", "tool_call_id": "call_1", "content": "12:00"}]}
            """;
        using var response = await node.Server.Http.PostAsync("/v1/chat/completions", new StringContent(body, Encoding.UTF8, "application/json"));
        var text = await response.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("get_time|CET|call_1", text);
    }
}
