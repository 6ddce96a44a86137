using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Xunit;

namespace Serving.Inference.Node.Tests.EarlyExit;

/// <summary>A Llama fixture node started with early exit (packed steps), no exit probe.</summary>
public sealed class EarlyExitNode : IAsyncLifetime
{
    public NodeServer Server { get; private set; } = null!;

    public async Task InitializeAsync() => Server = await NodeServer.StartAsync(new Dictionary<string, string?>
    {
        ["Node:ModelPath"] = Models.TinyLlama,
        ["Node:MaxContext"] = "128",
        ["Node:EarlyExit"] = "true",
    });

    public async Task DisposeAsync() => await Server.DisposeAsync();
}

public sealed class EarlyExitHttpTests(EarlyExitNode node, SharedNode plainNode) : IClassFixture<EarlyExitNode>, IClassFixture<SharedNode>
{
    private static JsonObject Body(string? earlyExit = null, bool stream = false)
    {
        var body = new JsonObject
        {
            ["model"] = NodeServer.ModelId,
            ["prompt"] = new JsonArray(5, 17, 42, 7),
            ["max_tokens"] = 12,
            ["temperature"] = 0,
            ["ignore_eos"] = true,
            ["logprobs"] = 0,
        };
        if (earlyExit is not null) body["early_exit"] = JsonNode.Parse(earlyExit);
        if (stream) body["stream"] = true;
        return body;
    }

    private static async Task<JsonObject> Ok(HttpClient http, JsonObject body)
    {
        using var response = await http.PostAsJsonAsync("v1/completions", body);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, text);
        return JsonNode.Parse(text)!.AsObject();
    }

    private static List<string> Tokens(JsonObject json) => json["choices"]![0]!["logprobs"]!["tokens"]!.AsArray().Select(t => t!.GetValue<string>()).ToList();

    [Fact]
    public async Task Speculative_EqualsPlainGreedy_AndReportsDraftAcceptance()
    {
        var plain = await Ok(node.Server.Http, Body());
        var speculative = await Ok(node.Server.Http, Body("""{"mode":"speculative","draft_layers":1,"draft_tokens":3}"""));
        Assert.Equal(Tokens(plain), Tokens(speculative));
        Assert.InRange(speculative["usage"]!["draft_acceptance"]!.GetValue<double>(), 0, 1);
        Assert.Null(plain["usage"]!["layers_per_token"]);
    }

    [Fact]
    public async Task Confident_Cosine_ReportsLayersPerToken()
    {
        var json = await Ok(node.Server.Http, Body("""{"mode":"confident","criterion":"cosine","threshold":-1}"""));
        // Threshold -1: every token leaves after its first block.
        Assert.Equal(1.0, json["usage"]!["layers_per_token"]!.GetValue<double>());
        var full = await Ok(node.Server.Http, Body("""{"mode":"confident","criterion":"cosine","threshold":1}"""));
        Assert.True(full["usage"]!["layers_per_token"]!.GetValue<double>() > 1);
    }

    [Fact]
    public async Task Metrics_RecordLayersPerTokenByMode_DraftAcceptance_AndTheMethod()
    {
        await Ok(node.Server.Http, Body("""{"mode":"confident","criterion":"cosine","threshold":-1}"""));
        await Ok(node.Server.Http, Body("""{"mode":"speculative","draft_layers":1,"draft_tokens":3}"""));
        // The observer records a request when the scheduler finishes it, which may trail the HTTP answer: poll (bounded).
        string text = "";
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (DateTime.UtcNow < deadline)
        {
            text = await node.Server.Http.GetStringAsync("metrics");
            if (text.Contains("serving_node_speculative_draft_acceptance_count", StringComparison.Ordinal)
                && text.Contains("mode=\"confident\"", StringComparison.Ordinal)) break;
            await Task.Delay(50);
        }
        var lines = text.Split('\n');
        // The confident request ran one block per token: its histogram has a count in the le="1" bucket.
        Assert.Contains(lines, l => l.StartsWith("serving_node_early_exit_layers_per_token_bucket{", StringComparison.Ordinal)
            && l.Contains("mode=\"confident\"", StringComparison.Ordinal) && l.Contains("le=\"1\"", StringComparison.Ordinal) && !l.EndsWith(" 0", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.StartsWith("serving_node_early_exit_layers_per_token_count{", StringComparison.Ordinal) && l.Contains("mode=\"speculative\"", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.StartsWith("serving_node_speculative_draft_acceptance_count", StringComparison.Ordinal) && !l.EndsWith(" 0", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.StartsWith("serving_node_decoding_requests_total{", StringComparison.Ordinal) && l.Contains("method=\"speculative\"", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("""{"mode":"sometimes"}""", HttpStatusCode.BadRequest, "early_exit.mode", null)]
    [InlineData("""{"mode":"confident","criterion":"cosine","threshold":2}""", HttpStatusCode.BadRequest, "early_exit.threshold", null)]
    [InlineData("""{"mode":"confident","criterion":"entropy"}""", HttpStatusCode.BadRequest, "early_exit.criterion", null)]
    [InlineData("""{"mode":"confident","criterion":"probe"}""", HttpStatusCode.UnprocessableEntity, "early_exit.criterion", "feature_unavailable")]
    [InlineData("""{"mode":"speculative","draft_layers":9}""", HttpStatusCode.BadRequest, "early_exit.draft_layers", null)]
    [InlineData("""{"mode":"speculative","draft_tokens":0}""", HttpStatusCode.BadRequest, "early_exit.draft_tokens", null)]
    public async Task BadEarlyExit_SpecificError(string earlyExit, HttpStatusCode status, string param, string? code)
    {
        using var response = await node.Server.Http.PostAsJsonAsync("v1/completions", Body(earlyExit));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == status, text);
        var error = JsonNode.Parse(text)!["error"]!;
        Assert.Equal(param, error["param"]!.GetValue<string>());
        if (code is not null) Assert.Equal(code, error["code"]!.GetValue<string>());
    }

    [Fact]
    public async Task EarlyExit_OnANodeWithoutIt_Is422NamingTheField()
    {
        using var response = await plainNode.Server.Http.PostAsJsonAsync("v1/completions", Body("""{"mode":"confident","criterion":"cosine"}"""));
        Assert.Equal(HttpStatusCode.UnprocessableEntity, response.StatusCode);
        var error = JsonNode.Parse(await response.Content.ReadAsStringAsync())!["error"]!;
        Assert.Equal("early_exit", error["param"]!.GetValue<string>());
        Assert.Equal("feature_unavailable", error["code"]!.GetValue<string>());
    }
}
