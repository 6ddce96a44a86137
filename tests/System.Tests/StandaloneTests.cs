using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using System.Text.RegularExpressions;
using Serving.AdapterStore.Storage;
using Serving.System.Tests.Infrastructure;

namespace Serving.System.Tests;

/// <summary>README's run command: the built one-process host, driven only by what it prints.</summary>
public sealed partial class StandaloneTests
{
    [Fact]
    public async Task Standalone_PrintsKeyAndCurl_CompletionThroughGateway_StopsOnSigterm()
    {
        int port = EmbeddedGarnet.FreePort();
        using var host = ServiceProcess.Start("standalone", Paths.Standalone, "--Standalone:Port", port.ToString(global::System.Globalization.CultureInfo.InvariantCulture));
        await host.WaitForLineAsync(l => l.Contains("Ctrl+C stops everything", StringComparison.Ordinal), TimeSpan.FromSeconds(90));

        // Everything below comes from the banner: the gateway URL, the dev key, the curl example's body.
        string gateway = GatewayLine().Match(string.Join('\n', host.Lines)).Groups[1].Value;
        string key = KeyLine().Match(string.Join('\n', host.Lines)).Groups[1].Value;
        string curl = host.Lines.First(l => l.TrimStart().StartsWith("curl -s", StringComparison.Ordinal));
        var bodies = BodyLine().Matches(string.Join('\n', host.Lines)).Select(m => m.Groups[1].Value).ToList();
        // The base model, the same request through a public adapter, then one request per alignment method with the seeded
        // default head (those run in tests/Standalone.Tests/RewardHeads).
        Assert.Equal(5, bodies.Count);
        Assert.Equal(["best_of_n", "args", "darwin"], bodies.Skip(2).Select(b => JsonDocument.Parse(b).RootElement.GetProperty("alignment").GetProperty("method").GetString()));
        Assert.Contains(host.Lines, l => l.Contains("Seeded 2 reward heads of tenant public (positive, positive-otter)", StringComparison.Ordinal));
        string body = bodies[0];
        Assert.Equal($"http://127.0.0.1:{port}", gateway);
        Assert.StartsWith("sk-", key);
        Assert.Contains($"{gateway}/v1/chat/completions", curl);
        Assert.Contains($"Bearer {key}", curl);

        using var http = new HttpClient { BaseAddress = new Uri(gateway), Timeout = TimeSpan.FromSeconds(60) };
        string baseText;
        using (var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent(body, null, "application/json") })
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
            using var response = await http.SendAsync(request);
            string json = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.OK, json);
            using var doc = JsonDocument.Parse(json);
            var choice = doc.RootElement.GetProperty("choices")[0];
            baseText = choice.GetProperty("message").GetProperty("content").GetString()!;
            Assert.False(string.IsNullOrWhiteSpace(baseText));
            Assert.Equal("demo", doc.RootElement.GetProperty("model").GetString());
            Assert.True(doc.RootElement.GetProperty("usage").GetProperty("completion_tokens").GetInt32() > 0);
            Assert.False(response.Headers.Contains("X-Serving-Adapter"));
        }

        // The second example: the demo adapters were seeded as tenant public at start; the dev tenant may use them, and the
        // same prompt and seed give another text.
        Assert.Contains("\"model\":\"demo:public/german\"", bodies[1]);
        Assert.Contains(host.Lines, l => l.Contains("Seeded 8 adapters of tenant public", StringComparison.Ordinal));
        using (var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent(bodies[1], null, "application/json") })
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
            using var response = await http.SendAsync(request);
            string json = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.OK, json);
            Assert.StartsWith("public/german@", Assert.Single(response.Headers.GetValues("X-Serving-Adapter")), StringComparison.Ordinal);
            using var doc = JsonDocument.Parse(json);
            string adapterText = doc.RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString()!;
            Assert.False(string.IsNullOrWhiteSpace(adapterText));
            Assert.NotEqual(baseText, adapterText);
        }
        using (var request = new HttpRequestMessage(HttpMethod.Get, "/v1/models"))
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
            using var response = await http.SendAsync(request);
            string models = await response.Content.ReadAsStringAsync();
            foreach (var name in Directory.GetDirectories(Path.Combine(Paths.DemoModel, "adapters")).Select(Path.GetFileName))
                Assert.Contains($"\"demo:public/{name}\"", models);
        }

        // The key is what lets it through.
        using (var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent(body, null, "application/json") })
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "sk-not-the-dev-key");
            using var response = await http.SendAsync(request);
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        }

        // The dev tenant may upload an adapter for the demo model (its config is registered), and it is listed.
        using (var request = new HttpRequestMessage(HttpMethod.Post, "/v1/adapters/german") { Content = AdapterUpload.Demo("german") })
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
            using var response = await http.SendAsync(request);
            Assert.True(response.StatusCode == HttpStatusCode.Created, await response.Content.ReadAsStringAsync());
        }

        Assert.Equal(0, await host.TerminateAsync(TimeSpan.FromSeconds(30)));
        Assert.Contains(host.Lines, l => l.StartsWith("Stopping:", StringComparison.Ordinal));
    }

    [GeneratedRegex(@"Gateway\s+(http://\S+)")]
    private static partial Regex GatewayLine();

    [GeneratedRegex(@"Dev key\s+(sk-\S+)")]
    private static partial Regex KeyLine();

    [GeneratedRegex(@"-d '(\{.*\})'")]
    private static partial Regex BodyLine();
}
