using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Serving.Perplexity;
using Serving.System.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Serving.System.Tests;

/// <summary>
/// Issue 14 through the gateway and two real nodes: a real demo adapter uploaded with the default codec keeps what it
/// learned (greedy answers unlike the base's; own-domain loss scored through the API keeps ≥ 90% of the lossless
/// improvement). The previous default (ComPEFT, density 0.1, α = σ) answered German prompts exactly like the base model;
/// the default is now <c>auto</c>. And <c>echo</c> prompt scoring through the gateway is the node's, refusals included.
/// (The node's echo against the engine's teacher-forced log-softmax: Inference.Node.Tests, EchoTests; the same loss on
/// the whole test split through the engine: DemoAdapterQualityTests.)
/// </summary>
public sealed class CompressedAdapterTests(ClusterFixture fixture, ITestOutputHelper output) : IClassFixture<ClusterFixture>
{
    private Cluster Cluster => fixture.Cluster;

    /// <summary>
    /// A German opening and two chat turns in the forge's format. Under the old default the adapter answered all three
    /// with exactly the base's greedy tokens (checked when this test was written: it fails with codec=compeft); the
    /// lossless and the default upload answer in the adapter's German-like register.
    /// </summary>
    private static readonly string[] GermanPrompts =
    [
        "<|endoftext|>Der",
        "<|endoftext|><|user|>Erzähl mir etwas.<|end|><|assistant|>",
        "<|endoftext|><|user|>Tell me something.<|end|><|assistant|>",
    ];

    [Fact]
    public async Task GermanAdapter_UploadedWithDefaults_AnswersGermanDifferentlyFromTheBase()
    {
        using var client = Cluster.Client();
        using var up = await client.PostAsync("/v1/adapters/german-defaults", AdapterUpload.Demo("german"));
        string upload = await up.Content.ReadAsStringAsync();
        Assert.True(up.StatusCode == HttpStatusCode.Created, upload);
        var codec = JsonDocument.Parse(upload).RootElement.GetProperty("codec");
        Assert.Equal("auto kept>=0.95", codec.GetProperty("requested").GetString());
        Assert.True(codec.GetProperty("ratio").GetDouble() >= 8, upload);
        Assert.True(codec.GetProperty("predictedKept").GetDouble() >= 0.95, upload);

        await Cluster.WaitForNodesAsync(2);
        foreach (string prompt in GermanPrompts)
        {
            string baseText = await GreedyAsync(client, Cluster.Model, prompt);
            string adapted = await GreedyAsync(client, $"{Cluster.Model}:german-defaults", prompt);
            Assert.False(baseText == adapted, $"'{prompt}': the adapter answers exactly like the base: '{adapted}'");
        }
    }

    private static async Task<string> GreedyAsync(HttpClient client, string model, string prompt)
    {
        using var response = await client.SendAsync(Sse.Completion(prompt, 24, stream: false, model));
        string body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{model}: {body}");
        return JsonDocument.Parse(body).RootElement.GetProperty("choices")[0].GetProperty("text").GetString()!;
    }

    /// <summary>A German document of the test split, long enough to span several of the node's prefill chunks.</summary>
    private const string German = "<|endoftext|>Wußten Sie schon...\n... daß Johann Wolfgang von Goethe erfolglos geblieben wäre, wenn er\n"
        + "mit Vornamen Günther geheißen hätte? Zeigt mir einen Mann der Gewalttat, mit dem es ein gutes Ende genommen hat.";

    private static async Task UploadAsync(HttpClient client, string name, params (string, string)[] fields)
    {
        using var up = await client.PostAsync($"/v1/adapters/{name}", AdapterUpload.Demo("german", fields));
        string body = await up.Content.ReadAsStringAsync();
        Assert.True(up.StatusCode == HttpStatusCode.Created, body);
    }

    private static async Task<(HttpStatusCode Status, JsonObject Body)> PostAsync(HttpClient client, string model, string prompt, string extra = "")
    {
        string json = $$"""{"model":{{JsonSerializer.Serialize(model)}},"prompt":{{JsonSerializer.Serialize(prompt)}},"max_tokens":0,"echo":true,"logprobs":3{{extra}}}""";
        using var response = await client.PostAsync("/v1/completions", new StringContent(json, Encoding.UTF8, "application/json"));
        string text = await response.Content.ReadAsStringAsync();
        return (response.StatusCode, JsonNode.Parse(text)!.AsObject());
    }

    /// <summary>A client straight to node <paramref name="i"/>, acting for the test tenant as the gateway does (<c>X-Serving-Tenant</c>).</summary>
    private HttpClient NodeClient(int i)
    {
        var c = new HttpClient { BaseAddress = new Uri(Cluster.NodeUrls[i]), Timeout = TimeSpan.FromSeconds(60) };
        c.DefaultRequestHeaders.Add("X-Serving-Tenant", Cluster.Tenant);
        return c;
    }

    [Fact]
    public async Task Echo_ThroughTheGatewayWithAnAdapter_ReturnsTheNodesPromptLogprobs()
    {
        using var client = Cluster.Client();
        await UploadAsync(client, "german-echo", ("codec", "lossless"));
        await Cluster.WaitForNodesAsync(2);

        var logprobs = new Dictionary<string, double[]>();
        foreach (var (gatewayModel, nodeModel) in new[] { (Cluster.Model, Cluster.Model), ($"{Cluster.Model}:german-echo", $"{Cluster.Model}:{Cluster.Tenant}/german-echo") })
        {
            var (status, viaGateway) = await PostAsync(client, gatewayModel, German);
            Assert.True(status == HttpStatusCode.OK, viaGateway.ToJsonString());
            var choice = viaGateway["choices"]![0]!;
            Assert.Equal(German, (string)choice["text"]!);
            Assert.Equal(0, (int)viaGateway["usage"]!["completion_tokens"]!);
            var lp = choice["logprobs"]!;
            var gatewayLogprobs = lp["token_logprobs"]!.AsArray();
            Assert.True(gatewayLogprobs.Count > 64, $"{gatewayLogprobs.Count} prompt tokens");
            Assert.Equal((int)viaGateway["usage"]!["prompt_tokens"]!, gatewayLogprobs.Count);
            Assert.Null(gatewayLogprobs[0]);
            logprobs[gatewayModel] = gatewayLogprobs.Skip(1).Select(v => (double)v!).ToArray();

            // Each node directly: the same tokens, offsets and logprobs (and top-3) to 1e-4.
            for (int i = 0; i < Cluster.NodeUrls.Length; i++)
            {
                using var node = NodeClient(i);
                var (nodeStatus, direct) = await PostAsync(node, nodeModel, German);
                Assert.True(nodeStatus == HttpStatusCode.OK, direct.ToJsonString());
                var expected = direct["choices"]![0]!["logprobs"]!;
                Assert.Equal(expected["tokens"]!.ToJsonString(), lp["tokens"]!.ToJsonString());
                Assert.Equal(expected["text_offset"]!.ToJsonString(), lp["text_offset"]!.ToJsonString());
                var expectedLogprobs = expected["token_logprobs"]!.AsArray();
                for (int j = 1; j < gatewayLogprobs.Count; j++)
                {
                    Assert.InRange(Math.Abs((double)gatewayLogprobs[j]! - (double)expectedLogprobs[j]!), 0, 1e-4);
                    var top = lp["top_logprobs"]![j]!.AsObject();
                    var expectedTop = expected["top_logprobs"]![j]!.AsObject();
                    Assert.Equal(expectedTop.Select(p => p.Key).Order(StringComparer.Ordinal), top.Select(p => p.Key).Order(StringComparer.Ordinal));
                    foreach (var (token, value) in expectedTop) Assert.InRange(Math.Abs((double)top[token]! - (double)value!), 0, 1e-4);
                }
            }
        }

        // What the gateway scored with the adapter is the adapter: German text is clearly likelier than under the base.
        double shift = logprobs[$"{Cluster.Model}:german-echo"].Zip(logprobs[Cluster.Model]).Average(p => p.First - p.Second);
        Assert.True(shift > 0.3, $"mean logprob shift of the German adapter through the gateway: {shift:F3}");
    }

    public static TheoryData<string, string> Refused => new()
    {
        { ""","stream":true""", "stream" },
        { ""","n":2""", "n and best_of must be 1" },
        { ""","n":2,"best_of":2""", "n and best_of must be 1" },
    };

    [Theory]
    [MemberData(nameof(Refused))]
    public async Task Echo_WithStreamOrSeveralChoices_IsTheNodes400ThroughTheGateway(string extra, string message)
    {
        using var client = Cluster.Client();
        await Cluster.WaitForNodesAsync(2);
        var (status, viaGateway) = await PostAsync(client, Cluster.Model, German, extra);
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("echo", (string?)viaGateway["error"]!["param"]);
        Assert.Contains(message, (string)viaGateway["error"]!["message"]!, StringComparison.Ordinal);

        using var node = NodeClient(0);
        var (nodeStatus, direct) = await PostAsync(node, Cluster.Model, German, extra);
        Assert.Equal(HttpStatusCode.BadRequest, nodeStatus);
        Assert.Equal(direct["error"]!.ToJsonString(), viaGateway["error"]!.ToJsonString());
    }

    /// <summary>Documents of the German test split scored here: the first 60 of its 179 (corpus order), 3,884 of its 12.4k scored tokens (~6 s for the four models here).</summary>
    private const int LossDocuments = 60;

    /// <summary>
    /// The acceptance item's loss half, through the API: mean token loss of the first <see cref="LossDocuments"/>
    /// documents of <c>models/demo/eval/german.test.jsonl</c> (each rendered as the eval README says, one request each:
    /// echo, max_tokens 0, logprobs 0, via the perplexity tool's scorer) for the base, the lossless upload, the upload
    /// with defaults and the old default (ComPEFT density 0.1): the default keeps ≥ 90% of the lossless improvement and
    /// the old default does not (the measure tells them apart).
    /// </summary>
    [Fact]
    public async Task GermanAdapter_UploadedWithDefaults_KeepsAtLeast90PercentOfTheLosslessImprovementThroughTheApi()
    {
        using var client = Cluster.Client();
        await UploadAsync(client, "german-loss-lossless", ("codec", "lossless"));
        await UploadAsync(client, "german-loss-defaults");
        await UploadAsync(client, "german-loss-old-default", ("codec", "compeft"), ("density", "0.1"));
        await Cluster.WaitForNodesAsync(2);

        var lines = File.ReadLines(Path.Combine(Paths.DemoModel, "eval", "german.test.jsonl")).Take(LossDocuments).Select(l => JsonNode.Parse(l)!).ToList();
        var documents = lines.Select(e => (bool)e["chat"]!
            ? $"<|endoftext|><|user|>{(string)e["prompt"]!}<|end|><|assistant|>{(string)e["response"]!}<|end|>"
            : "<|endoftext|>" + (string)e["text"]!).ToList();
        long tokens = lines.Sum(e => (int)e["n_tokens"]! - 1); // every token but each document's leading <|endoftext|>

        var scorer = new PerplexityScorer(client, new ScorerOptions { Parallel = 4 });
        async Task<double> LossAsync(string model)
        {
            var result = await scorer.ScoreAsync(model, documents);
            Assert.Equal(tokens, result.Tokens); // the node tokenized each document as the forge did
            return result.MeanNll;
        }
        double baseLoss = await LossAsync(Cluster.Model);
        double lossless = await LossAsync($"{Cluster.Model}:german-loss-lossless");
        double defaults = await LossAsync($"{Cluster.Model}:german-loss-defaults");
        double old = await LossAsync($"{Cluster.Model}:german-loss-old-default");

        string numbers = $"base {baseLoss:F4}, lossless {lossless:F4}, default {defaults:F4}, old default {old:F4} nats/token over {tokens} tokens";
        output.WriteLine(numbers);
        Assert.True(baseLoss - lossless > 0.5, $"the lossless adapter should clearly help: {numbers}");
        double kept = (baseLoss - defaults) / (baseLoss - lossless);
        Assert.True(kept >= 0.9, $"the default upload keeps {kept:P1} of the improvement: {numbers}");
        double keptOld = (baseLoss - old) / (baseLoss - lossless);
        Assert.True(keptOld < 0.5, $"the old default should lose most of it, keeps {keptOld:P1}: {numbers}");
    }
}
