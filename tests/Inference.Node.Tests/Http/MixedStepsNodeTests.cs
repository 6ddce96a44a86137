using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Options;
using Xunit;

namespace Serving.Inference.Node.Tests.Http;

/// <summary><c>Node:MixedSteps</c>: concurrent requests through the HTTP surface get what a node without mixed steps gives.</summary>
public sealed class MixedStepsNodeTests
{
    [Fact]
    public async Task MixedSteps_ConcurrentGreedyRequests_AnswerAsTheWholeStepNodeDoes()
    {
        await using var whole = await NodeServer.StartAsync();
        await using var mixed = await NodeServer.StartAsync(new Dictionary<string, string?>
        {
            ["Node:MixedSteps"] = "true", ["Node:MaxTokensPerStep"] = "24", ["Node:MaxPrefillTokensPerStep"] = "16",
        });
        string[] prompts = ["the quick brown fox", "hello", string.Join(' ', Enumerable.Repeat("a long prompt of many words", 8)), "x y z"];
        async Task<string[]> AskAll(NodeServer node) => await Task.WhenAll(prompts.Select(async p =>
        {
            using var r = await node.Http.PostAsJsonAsync("v1/completions", new { model = NodeServer.ModelId, prompt = p, max_tokens = 12, temperature = 0, ignore_eos = true });
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            var body = JsonNode.Parse(await r.Content.ReadAsStringAsync())!;
            Assert.Equal(12, (int)body["usage"]!["completion_tokens"]!);
            return (string)body["choices"]![0]!["text"]!;
        }));
        Assert.Equal(await AskAll(whole), await AskAll(mixed));

        var prefill = JsonNode.Parse(await mixed.Http.GetStringAsync("node/status"))!["prefill"]!;
        Assert.True((bool)prefill["mixed_steps"]!);
        Assert.Equal(24, (int)prefill["max_tokens_per_step"]!);
        Assert.Equal(16, (int)prefill["max_prefill_tokens_per_step"]!);
        Assert.False((bool)prefill["prefix_reuse"]!);
        Assert.True((long)prefill["prompt_tokens"]! > 0);
        Assert.Equal(0, (long)prefill["prefix_tokens_reused"]!);
    }

    [Fact]
    public async Task MaxTokensPerStepBelowOne_IsRefusedAtStart_NamingTheSetting()
    {
        var e = await Assert.ThrowsAsync<OptionsValidationException>(() => NodeServer.StartAsync(new Dictionary<string, string?> { ["Node:MaxTokensPerStep"] = "0" }));
        Assert.Contains("Node:MaxTokensPerStep must be in [1, 65536], got 0", e.Message);
    }
}
