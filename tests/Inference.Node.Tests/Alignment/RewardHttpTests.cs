using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.DependencyInjection;
using Serving.Checkpoints.RewardHeads;
using Serving.Inference.Engine;
using Serving.Inference.Node.Hosting;
using Serving.Inference.Node.Tests.Http;
using Serving.Inference.Rewards;
using Serving.Inference.Runtime;
using Xunit;

namespace Serving.Inference.Node.Tests.Alignment;

/// <summary>The demo model with its reward head as <c>public/positive</c>, over real HTTP: rewards and every alignment method.</summary>
public sealed class DemoRewardNode : IAsyncLifetime
{
    public static string Demo
    {
        get
        {
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Serving.sln"))) dir = dir.Parent;
            return Path.Combine(dir!.FullName, "models", "demo");
        }
    }

    public NodeServer Server { get; private set; } = null!;

    public async Task InitializeAsync() => Server = await NodeServer.StartAsync(new Dictionary<string, string?>
    {
        ["Node:ModelPath"] = Demo,
        ["Node:ModelId"] = "demo",
        ["Node:MaxContext"] = "256",
        ["Node:RewardHeads:positive"] = Path.Combine(Demo, "reward-head"),
    });

    public async Task DisposeAsync() => await Server.DisposeAsync();
}

public sealed class RewardHttpTests(DemoRewardNode node) : IClassFixture<DemoRewardNode>
{
    private HttpClient Http => node.Server.Http;

    private static object Chat(string content, object? extra = null)
    {
        var body = new JsonObject
        {
            ["model"] = "demo",
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = content }),
            ["max_tokens"] = 16,
            ["temperature"] = 0.8,
            ["seed"] = 3,
        };
        if (extra is not null)
        {
            foreach (var (k, v) in JsonNode.Parse(System.Text.Json.JsonSerializer.Serialize(extra))!.AsObject()) body[k] = v?.DeepClone();
        }
        return body;
    }

    private async Task<JsonObject> PostOk(string path, object body)
    {
        using var response = await Http.PostAsJsonAsync(path, body);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, text);
        return JsonNode.Parse(text)!.AsObject();
    }

    private async Task<JsonObject> PostError(string path, object body, HttpStatusCode status)
    {
        using var response = await Http.PostAsJsonAsync(path, body);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == status, $"{response.StatusCode}: {text}");
        return JsonNode.Parse(text)!["error"]!.AsObject();
    }

    /// <summary>The reported reward equals the head's reward of prompt + answer computed by a fresh decoder.</summary>
    [Fact]
    public async Task Completion_WithRewardHead_ReportsTheHeadsRewardOfPromptAndAnswer()
    {
        var json = await PostOk("v1/completions", new { model = "demo", prompt = "<|endoftext|>The cat", max_tokens = 12, temperature = 0, reward_head = "public/positive", return_token_rewards = true, ignore_eos = true });
        var choice = json["choices"]![0]!;
        var reward = choice["reward"]!.GetValue<float>();
        var tokenRewards = choice["token_rewards"]!.AsArray().Select(x => x!.GetValue<float>()).ToList();
        Assert.Equal(12, tokenRewards.Count);
        Assert.Equal(reward, tokenRewards[^1]);
        Assert.True(json["usage"]!["generated_tokens"]!.GetValue<int>() >= json["usage"]!["completion_tokens"]!.GetValue<int>());

        var host = node.Server.Services.GetRequiredService<ModelHost>();
        var ids = host.Tokenizer.Encode("<|endoftext|>The cat" + choice["text"]!.GetValue<string>());
        using var dec = new BatchDecoder(host.Model, 1);
        var seq = dec.TryAllocate()!;
        dec.SetRewardHead(seq, new RewardHead(RewardHeadReader.ReadFolder(Path.Combine(DemoRewardNode.Demo, "reward-head"), host.Model.Config), host.Model, "x"));
        dec.Prefill(seq, ids);
        Assert.InRange(Math.Abs(seq.Reward - reward), 0, 1e-3);
    }

    [Theory]
    [InlineData("best_of_n")]
    [InlineData("args")]
    [InlineData("darwin")]
    public async Task Chat_EachAlignmentMethod_ReturnsOneRewardedChoiceAndItsReport(string method)
    {
        object alignment = method switch
        {
            "best_of_n" => new { method, n = 3 },
            "args" => new { method, k = 5, weight = 1.5 },
            _ => new { method, variants = 3, interval = 6, survivors = 2 },
        };
        var json = await PostOk("v1/chat/completions", Chat("Tell me a fortune.", new { reward_head = "positive", alignment }));
        var choices = json["choices"]!.AsArray();
        Assert.Single(choices);
        Assert.NotNull(choices[0]!["reward"]);
        Assert.Equal(method, json["alignment"]!["method"]!.GetValue<string>());
        var usage = json["usage"]!;
        // Samples and beams count as generated; ARGS with a head on the embedding scores its candidates without a pass.
        var generated = usage["generated_tokens"]!.GetValue<int>();
        var completion = usage["completion_tokens"]!.GetValue<int>();
        Assert.True(method == "args" ? generated >= completion : generated > completion, $"generated {generated}, completion {completion}");
        if (method != "args")
        {
            var rewards = json["alignment"]!["candidate_rewards"]!.AsArray().Select(x => x!.GetValue<float>()).ToList();
            Assert.Equal(rewards.Max(), choices[0]!["reward"]!.GetValue<float>());
        }
    }

    [Fact]
    public async Task Stream_BestOfN_WinnerThenAlignmentChunkThenDone_AndTokenRewardsPerChunk()
    {
        using var request = Sse.Post("v1/chat/completions", Chat("Tell me a fortune.", new
        {
            stream = true,
            stream_options = new { include_usage = true },
            reward_head = "public/positive",
            return_token_rewards = true,
            alignment = new { method = "best_of_n", n = 2, return_all = true },
        }));
        using var response = await Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var events = await Sse.ReadAllAsync(response);
        Assert.Equal("[DONE]", events[^1].Data);
        var chunks = events.Take(events.Count - 1).Select(e => e.Json).ToList();
        var alignment = chunks.Single(c => c["alignment"] is not null);
        Assert.Empty(alignment["choices"]!.AsArray());
        Assert.Equal("best_of_n", alignment["alignment"]!["method"]!.GetValue<string>());
        var contentChunks = chunks.Where(c => c["choices"]!.AsArray().Count == 1 && c["choices"]![0]!["delta"]!["content"] is { } content && content.GetValue<string>().Length > 0).ToList();
        Assert.NotEmpty(contentChunks);
        Assert.All(contentChunks, c => Assert.NotNull(c["choices"]![0]!["reward"]));
        foreach (var i in new[] { 0, 1 }) Assert.Contains(chunks, c => c["choices"]!.AsArray().Count == 1 && c["choices"]![0]!["index"]!.GetValue<int>() == i && c["choices"]![0]!["finish_reason"] is not null && c["choices"]![0]!["reward"] is not null);
        Assert.NotNull(chunks.Single(c => c["usage"] is JsonObject)["usage"]!["generated_tokens"]);
    }

    [Theory]
    [InlineData("""{"reward_head":"public/nope"}""", HttpStatusCode.NotFound, "reward_head", "reward_head_not_found")]
    [InlineData("""{"reward_head":"other/positive"}""", HttpStatusCode.NotFound, "reward_head", "reward_head_not_found")]
    [InlineData("""{"alignment":{"method":"args"}}""", HttpStatusCode.BadRequest, "reward_head", null)]
    [InlineData("""{"return_token_rewards":true}""", HttpStatusCode.BadRequest, "return_token_rewards", null)]
    [InlineData("""{"reward_head":"positive","alignment":{"method":"beam"}}""", HttpStatusCode.BadRequest, "alignment.method", null)]
    [InlineData("""{"reward_head":"positive","alignment":{"method":"args","k":0}}""", HttpStatusCode.BadRequest, "alignment.k", null)]
    [InlineData("""{"reward_head":"positive","alignment":{"method":"best_of_n","n":1000}}""", HttpStatusCode.BadRequest, "alignment.n", null)]
    [InlineData("""{"reward_head":"positive","alignment":{"method":"darwin","interval":0}}""", HttpStatusCode.BadRequest, "alignment.interval", null)]
    [InlineData("""{"reward_head":"positive","logprobs":true,"alignment":{"method":"best_of_n"}}""", HttpStatusCode.BadRequest, "logprobs", null)]
    public async Task BadAlignmentOrHead_SpecificError(string extra, HttpStatusCode status, string param, string? code)
    {
        var error = await PostError("v1/chat/completions", Chat("Hi", JsonNode.Parse(extra)), status);
        Assert.Equal(param, error["param"]!.GetValue<string>());
        if (code is not null) Assert.Equal(code, error["code"]!.GetValue<string>());
        Assert.False(string.IsNullOrWhiteSpace(error["message"]!.GetValue<string>()));
    }
}
