using System.ClientModel;
using System.ClientModel.Primitives;
using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Json.Schema;
using OpenAI;
using OpenAI.Chat;
using OpenAI.Models;
using Serving.System.Tests.Infrastructure;

namespace Serving.System.Tests;

/// <summary>A cluster (redis-server, gateway, one node) with one adapter of the test tenant, whose id has a '/'.</summary>
public sealed class ConformanceFixture : IAsyncLifetime
{
    public const string AdapterName = "german";

    /// <summary>The adapter's canonical id.</summary>
    public static string AdapterId => $"{Cluster.Model}:{Cluster.Tenant}/{AdapterName}";

    public Cluster Cluster { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Cluster = await Cluster.StartAsync(nodes: 1);
        using var client = Cluster.Client();
        using var up = await client.PostAsync($"/v1/adapters/{AdapterName}", AdapterUpload.Demo(AdapterName));
        Assert.True(up.StatusCode == HttpStatusCode.Created, await up.Content.ReadAsStringAsync());
    }

    public Task DisposeAsync()
    {
        Cluster.Dispose();
        return Task.CompletedTask;
    }
}

/// <summary>
/// The conformance suite: the official OpenAI Node SDK (npm <c>openai</c>, pinned in tests/Conformance/node) and the
/// official .NET client, unmodified, against the gateway and a real node on loopback.
/// </summary>
public sealed class ConformanceTests(ConformanceFixture fixture) : IClassFixture<ConformanceFixture>
{
    private const string WeatherSchema = """
        {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}, "unit": {"enum": ["c", "f"]}},
         "required": ["city", "unit"], "additionalProperties": false}
        """;

    private Cluster Cluster => fixture.Cluster;

    // No retries: a 429 must reach the test, not be waited out by the client's retry policy.
    private OpenAIClient Client(string key = Cluster.TenantKey) =>
        new(new ApiKeyCredential(key), new OpenAIClientOptions { Endpoint = new Uri(Cluster.GatewayUrl + "/v1"), RetryPolicy = new ClientRetryPolicy(maxRetries: 0) });

    private ChatClient Chat(string key = Cluster.TenantKey) => Client(key).GetChatClient(Cluster.Model);

    /// <summary>Every check of tests/Conformance/node/conformance.mjs passes (it prints one PASS/FAIL line per check).</summary>
    [Fact]
    public async Task NodeSdk_EveryCheckPasses()
    {
        var dir = Path.Combine(Paths.RepoRoot, "tests", "Conformance", "node");
        Assert.True(Directory.Exists(Path.Combine(dir, "node_modules", "openai")),
            $"The Node SDK is not installed: run `npm ci` in {dir} (.ci/run does).");
        var start = new ProcessStartInfo("node", "conformance.mjs")
        {
            WorkingDirectory = dir,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            Environment =
            {
                ["CONFORMANCE_BASE_URL"] = Cluster.GatewayUrl + "/v1",
                ["CONFORMANCE_MODEL"] = Cluster.Model,
                ["CONFORMANCE_KEY"] = Cluster.TenantKey,
                ["CONFORMANCE_ADAPTER"] = ConformanceFixture.AdapterId,
                ["CONFORMANCE_LIMITED_KEY"] = Cluster.LimitedKeys[0],
            },
        };
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(5));
        await process.WaitForExitAsync(timeout.Token);
        var output = await stdout + await stderr;
        Assert.True(process.ExitCode == 0, output + "\n--- gateway:\n" + Cluster.Gateway.Tail(20));
        var passed = output.Split('\n').Count(l => l.StartsWith("PASS ", StringComparison.Ordinal));
        Assert.True(passed >= 19, $"only {passed} checks ran:\n{output}");
    }

    [Fact]
    public async Task DotNet_ModelsListAndRetrieve_IdWithSlash()
    {
        var models = Client().GetOpenAIModelClient();
        OpenAIModelCollection list = await models.GetModelsAsync();
        Assert.Contains(list, m => m.Id == Cluster.Model);
        OpenAIModel adapter = await models.GetModelAsync(ConformanceFixture.AdapterId); // the client sends %2F
        Assert.Contains(ConformanceFixture.AdapterName, adapter.Id);
        var e = await Assert.ThrowsAsync<ClientResultException>(() => models.GetModelAsync($"{Cluster.Model}:nobody/none"));
        Assert.Equal(404, e.Status);
    }

    private static ChatCompletionOptions ToolOptions(ChatToolChoice choice)
    {
        // One call per turn (parallel_tool_calls: false), as a client that runs one tool at a time asks.
        var options = new ChatCompletionOptions { Temperature = 0f, MaxOutputTokenCount = 64, ToolChoice = choice, AllowParallelToolCalls = false };
        options.Tools.Add(ChatTool.CreateFunctionTool("get_weather", null, BinaryData.FromString(WeatherSchema)));
        return options;
    }

    private static void AssertValid(string arguments)
    {
        var result = JsonSchema.FromText(WeatherSchema).Evaluate(JsonNode.Parse(arguments));
        Assert.True(result.IsValid, $"arguments {arguments} do not validate against the function's schema");
    }

    [Fact]
    public async Task DotNet_ToolCallRoundTrip_ThroughGateway()
    {
        List<ChatMessage> messages = [new UserChatMessage("Weather in Oslo?")];
        ChatCompletion first = await Chat().CompleteChatAsync(messages, ToolOptions(ChatToolChoice.CreateRequiredChoice()));
        Assert.Equal(ChatFinishReason.ToolCalls, first.FinishReason);
        var call = Assert.Single(first.ToolCalls);
        Assert.Equal("get_weather", call.FunctionName);
        AssertValid(call.FunctionArguments.ToString());

        messages.Add(new AssistantChatMessage(first));
        messages.Add(new ToolChatMessage(call.Id, "21 degrees"));
        ChatCompletion answer = await Chat().CompleteChatAsync(messages, ToolOptions(ChatToolChoice.CreateNoneChoice()));
        Assert.Empty(answer.ToolCalls);
        Assert.NotEmpty(answer.Content);
    }

    private const string TimeSchema = """
        {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"], "additionalProperties": false}
        """;

    /// <summary>
    /// tool_choice "required" forces a call through the constrained decoder: twenty sampled tries per tool set (T = 1,
    /// seeds 1–20, parallel_tool_calls alternating; both tools in 48 tokens, get_weather alone in 80) are each a call
    /// whose arguments validate against the function's parameters.
    /// </summary>
    [Fact]
    public async Task DotNet_RequiredToolChoice_TwentyTriesAtTemperatureOne_EachACallWhoseArgumentsValidate()
    {
        foreach (var weatherOnly in new[] { false, true })
        {
            var calls = new HashSet<string>();
            for (var seed = 1; seed <= 20; seed++)
            {
                var options = new ChatCompletionOptions
                {
                    Temperature = 1f, MaxOutputTokenCount = weatherOnly ? 80 : 48, ToolChoice = ChatToolChoice.CreateRequiredChoice(), AllowParallelToolCalls = seed % 2 == 0,
                };
#pragma warning disable OPENAI001 // Seed is marked experimental in the client
                options.Seed = seed;
#pragma warning restore OPENAI001
                options.Tools.Add(ChatTool.CreateFunctionTool("get_weather", null, BinaryData.FromString(WeatherSchema)));
                if (!weatherOnly) options.Tools.Add(ChatTool.CreateFunctionTool("get_time", null, BinaryData.FromString(TimeSchema)));
                ChatCompletion c = await Chat().CompleteChatAsync([new UserChatMessage("Weather or time, please.")], options);
                Assert.Equal(ChatFinishReason.ToolCalls, c.FinishReason);
                Assert.NotEmpty(c.ToolCalls);
                if (seed % 2 == 1) Assert.Single(c.ToolCalls); // parallel_tool_calls: false holds it to one call
                foreach (var call in c.ToolCalls)
                {
                    var schema = call.FunctionName switch
                    {
                        "get_weather" => WeatherSchema,
                        "get_time" when !weatherOnly => TimeSchema,
                        var other => throw new Xunit.Sdk.XunitException($"a call of {other}, which is not a tool of the request"),
                    };
                    var result = JsonSchema.FromText(schema).Evaluate(JsonNode.Parse(call.FunctionArguments.ToString()));
                    Assert.True(result.IsValid, $"seed {seed}: arguments {call.FunctionArguments} of {call.FunctionName} do not validate");
                    Assert.StartsWith("call_", call.Id);
                    calls.Add(call.FunctionName + call.FunctionArguments);
                }
            }
            Assert.True(calls.Count >= 2, $"only {calls.Count} distinct calls in 20 tries: {string.Join(" | ", calls)}"); // the tries sampled
        }
    }

    [Fact]
    public async Task DotNet_ToolCallStreaming_ThroughGateway()
    {
        List<ChatMessage> messages = [new UserChatMessage("Weather in Rome?")];
        string? id = null, name = null;
        var args = new StringBuilder();
        ChatFinishReason? finish = null;
        await foreach (var update in Chat().CompleteChatStreamingAsync(messages, ToolOptions(ChatToolChoice.CreateFunctionChoice("get_weather"))))
        {
            Assert.DoesNotContain(update.ContentUpdate, p => p.Text.Length > 0);
            foreach (var t in update.ToolCallUpdates)
            {
                id ??= t.ToolCallId;
                name ??= t.FunctionName;
                if (t.FunctionArgumentsUpdate is { } a) args.Append(a.ToString());
            }
            finish ??= update.FinishReason;
        }
        Assert.Equal(ChatFinishReason.ToolCalls, finish);
        Assert.Equal("get_weather", name);
        AssertValid(args.ToString());

        messages.Add(new AssistantChatMessage([ChatToolCall.CreateFunctionToolCall(id!, name!, BinaryData.FromString(args.ToString()))]));
        messages.Add(new ToolChatMessage(id!, "18 degrees"));
        var text = new StringBuilder();
        await foreach (var update in Chat().CompleteChatStreamingAsync(messages, ToolOptions(ChatToolChoice.CreateAutoChoice())))
        {
            foreach (var p in update.ContentUpdate) text.Append(p.Text);
        }
        Assert.NotEqual("", text.ToString());
    }

    [Fact]
    public async Task DotNet_JsonSchemaOutput_Validates()
    {
        var options = new ChatCompletionOptions
        {
            MaxOutputTokenCount = 60,
            ResponseFormat = ChatResponseFormat.CreateJsonSchemaFormat("city", BinaryData.FromString(WeatherSchema), jsonSchemaIsStrict: true),
        };
        ChatCompletion c = await Chat().CompleteChatAsync([new UserChatMessage("Describe a city")], options);
        AssertValid(c.Content[0].Text);
    }

    [Fact]
    public async Task DotNet_Logprobs_OnePerTokenWithAlternatives()
    {
        var options = new ChatCompletionOptions { MaxOutputTokenCount = 6, IncludeLogProbabilities = true, TopLogProbabilityCount = 2 };
        ChatCompletion c = await Chat().CompleteChatAsync([new UserChatMessage("Tell me a fortune")], options);
        // A sampled answer may end on a stop token: counted in usage, no logprobs entry (src/Inference.Node/README.md).
        var stopToken = c.FinishReason == ChatFinishReason.Stop ? 1 : 0;
        Assert.Equal(c.Usage.OutputTokenCount - stopToken, c.ContentTokenLogProbabilities.Count);
        Assert.All(c.ContentTokenLogProbabilities, t => Assert.Equal(2, t.TopLogProbabilities.Count));
    }

    [Fact]
    public async Task DotNet_AbortedStream_GatewayStillAnswers()
    {
        using var cts = new CancellationTokenSource();
        var updates = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var _ in Chat().CompleteChatStreamingAsync([new UserChatMessage("A long story")], new ChatCompletionOptions { MaxOutputTokenCount = 200 }, cts.Token))
            {
                if (++updates == 3) await cts.CancelAsync();
            }
        });
        ChatCompletion after = await Chat().CompleteChatAsync([new UserChatMessage("still there?")], new ChatCompletionOptions { MaxOutputTokenCount = 2 });
        Assert.NotNull(after.Content);
    }

    [Fact]
    public async Task DotNet_TypedErrors_400_401_404_429()
    {
        var bad = await Assert.ThrowsAsync<ClientResultException>(() => Chat().CompleteChatAsync([new UserChatMessage("hi")],
            ToolOptions(ChatToolChoice.CreateFunctionChoice("not_a_tool"))));
        Assert.Equal(400, bad.Status);
        Assert.Contains("not_a_tool", bad.Message);

        var auth = await Assert.ThrowsAsync<ClientResultException>(() => Chat("sk-wrong").CompleteChatAsync([new UserChatMessage("hi")]));
        Assert.Equal(401, auth.Status);

        var missing = await Assert.ThrowsAsync<ClientResultException>(() =>
            Client().GetChatClient($"{Cluster.Model}:nobody/none").CompleteChatAsync([new UserChatMessage("hi")]));
        Assert.Equal(404, missing.Status);

        var options = new ChatCompletionOptions { MaxOutputTokenCount = 1 };
        ClientResultException? limited = null;
        for (var i = 0; i < 3 && limited is null; i++)
        {
            try
            {
                await Client(Cluster.LimitedKeys[1]).GetChatClient(Cluster.Model).CompleteChatAsync([new UserChatMessage("hi")], options);
            }
            catch (ClientResultException e)
            {
                limited = e;
            }
        }
        Assert.Equal(429, limited?.Status);
    }

    [Fact]
    public async Task Gateway_UnknownRouteAndRequestId_OpenAIShapedAndEchoed()
    {
        using var client = Cluster.Client();
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/embeddings") { Content = new StringContent("{}", Encoding.UTF8, "application/json") };
        request.Headers.Add("X-Request-Id", "conformance-dotnet-1");
        using var response = await client.SendAsync(request);
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Equal("conformance-dotnet-1", Assert.Single(response.Headers.GetValues("x-request-id")));
        var error = JsonNode.Parse(await response.Content.ReadAsStringAsync())!["error"]!;
        Assert.Equal("unknown_url", (string?)error["code"]);
        Assert.Contains("/v1/embeddings", (string?)error["message"]);

        using var get = await client.GetAsync("/v1/chat/completions");
        Assert.Equal(HttpStatusCode.MethodNotAllowed, get.StatusCode);
        Assert.StartsWith("req_", Assert.Single(get.Headers.GetValues("x-request-id")));
    }

    [Fact]
    public async Task RequestId_ClientsOwn_ReachesTheNodesLog()
    {
        const string id = "conformance-log-7f3a";
        using var client = Cluster.Client();
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent($$"""{"model": "{{Cluster.Model}}", "max_tokens": -1, "messages": [{"role": "user", "content": "hi"}]}""", Encoding.UTF8, "application/json"),
        };
        request.Headers.Add("X-Request-Id", id);
        using var response = await client.SendAsync(request);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal(id, Assert.Single(response.Headers.GetValues("x-request-id")));
        // The node refused it (its own 400, forwarded) and logged the refusal under the client's id.
        await Cluster.Nodes[0].WaitForLineAsync(l => l.Contains(id, StringComparison.Ordinal), TimeSpan.FromSeconds(10));
    }
}
