using System.Net;
using System.Text.Json;
using Serving.System.Tests.Infrastructure;

namespace Serving.System.Tests;

/// <summary>
/// Issue 14: a real demo adapter uploaded through the gateway with the default codec keeps what it learned. The
/// previous default (ComPEFT, density 0.1, α = σ) answered German prompts exactly like the base model; the
/// default is now <c>auto</c>. The own-domain loss half of the acceptance item is measured through the engine in
/// Inference.Node.Tests (DemoAdapterQualityTests).
/// </summary>
public sealed class CompressedAdapterTests(ClusterFixture fixture) : IClassFixture<ClusterFixture>
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
}
