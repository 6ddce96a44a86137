using System.ClientModel;
using System.Net;
using OpenAI;
using OpenAI.Chat;
using Serving.Gateway.Tests.Infrastructure;

namespace Serving.Gateway.Tests.Api;

[Collection(RedisCollection.Name)]
public sealed class SurfaceTests(RedisFixture redis)
{
    [Fact]
    public async Task OpenAiClient_ChatAndStreamingThroughGateway()
    {
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString);
        await using var n1 = await FakeNode.StartAsync(redis.ConnectionString, gw.RegistryPrefix, "n1");
        await gw.PublishAdapterAsync("tenant-a", "mine");
        await gw.WaitForNodesAsync("n1");
        var chat = new ChatClient("fake:mine", new ApiKeyCredential(GatewayHost.KeyA), new OpenAIClientOptions { Endpoint = new Uri(gw.BaseUrl + "/v1") });

        ChatCompletion completion = await chat.CompleteChatAsync([new UserChatMessage("hi")]);
        Assert.Equal("t0 t1 t2 t3 ", completion.Content[0].Text);

        var text = new System.Text.StringBuilder();
        await foreach (var update in chat.CompleteChatStreamingAsync([new UserChatMessage("hi")]))
        {
            foreach (var part in update.ContentUpdate) text.Append(part.Text);
        }
        Assert.Equal("t0 t1 t2 t3 ", text.ToString());
        Assert.All(n1.Received, r => Assert.Equal("fake:tenant-a/mine", r.Model));

        var other = new ChatClient("fake:tenant-b/anything", new ApiKeyCredential(GatewayHost.KeyA), new OpenAIClientOptions { Endpoint = new Uri(gw.BaseUrl + "/v1") });
        var e = await Assert.ThrowsAsync<ClientResultException>(() => other.CompleteChatAsync([new UserChatMessage("hi")]));
        Assert.Equal(404, e.Status);
    }

    [Fact]
    public async Task HealthyNodesGauge_FollowsActiveHealthProbes()
    {
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString, new() { ["Gateway:Routing:HealthInterval"] = "00:00:00.200" });
        await using var n1 = await FakeNode.StartAsync(redis.ConnectionString, gw.RegistryPrefix, "n1");
        await gw.WaitForNodesAsync("n1");
        using var anonymous = gw.Client(null);

        async Task<string> GaugesUntil(string wanted)
        {
            var deadline = DateTime.UtcNow.AddSeconds(10);
            string lines = "";
            while (DateTime.UtcNow < deadline)
            {
                var metrics = await anonymous.GetStringAsync("/metrics");
                lines = string.Join("; ", metrics.Split('\n').Where(l => l.StartsWith("serving_gateway_nodes", StringComparison.Ordinal)));
                if (lines.Contains(wanted, StringComparison.Ordinal)) return lines;
                await Task.Delay(100);
            }
            return lines;
        }

        // A node failing its readiness probe stays in the registry view but leaves routing; it comes back when it passes.
        n1.Ready = false;
        var down = await GaugesUntil("serving_gateway_nodes_healthy{otel_scope_name=\"Serving.Gateway\"} 0");
        Assert.Contains("serving_gateway_nodes_healthy{otel_scope_name=\"Serving.Gateway\"} 0", down);
        Assert.Contains("serving_gateway_nodes{otel_scope_name=\"Serving.Gateway\"} 1", down);
        n1.Ready = true;
        var up = await GaugesUntil("serving_gateway_nodes_healthy{otel_scope_name=\"Serving.Gateway\"} 1");
        Assert.Contains("serving_gateway_nodes_healthy{otel_scope_name=\"Serving.Gateway\"} 1", up);
    }

    [Fact]
    public async Task Health_Metrics_OpenApi_Served()
    {
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString);
        using var anonymous = gw.Client(null);
        Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync("/health/live")).StatusCode);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await anonymous.GetAsync("/health/ready")).StatusCode);

        await using var n1 = await FakeNode.StartAsync(redis.ConnectionString, gw.RegistryPrefix, "n1");
        await gw.WaitForNodesAsync("n1");
        Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync("/health/ready")).StatusCode);
        using (var a = gw.Client(GatewayHost.KeyA))
        using (var r = await Chat.SendAsync(a, "fake")) Assert.Equal(HttpStatusCode.OK, r.StatusCode);

        // The exporter caches a scrape briefly; ask again (bounded) until the counters appear.
        string metrics = "";
        for (int i = 0; i < 20 && !metrics.Contains("http_server_request_duration"); i++)
        {
            if (i > 0) await Task.Delay(200);
            metrics = await anonymous.GetStringAsync("/metrics");
        }
        // One destination: YARP skips the policy, so no routing decision is counted here (RoutingEndToEndTests cover it).
        Assert.Contains("serving_gateway_nodes{otel_scope_name=\"Serving.Gateway\"} 1", metrics);
        Assert.Contains("serving_gateway_nodes_healthy{otel_scope_name=\"Serving.Gateway\"} 1", metrics);
        Assert.Contains("http_server_request_duration_seconds", metrics);
        string openapi = await anonymous.GetStringAsync("/openapi/v1.json");
        Assert.Contains("/admin/tenants", openapi);
        Assert.Contains("/v1/adapters", openapi);
        Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync("/scalar/v1")).StatusCode);
    }
}
