using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Xunit;

namespace Serving.Inference.Node.Tests.Http;

/// <summary>A node with <c>Node:GatewayKey</c>: requests without the gateway's credential are refused before any route runs.</summary>
public sealed class GatewayCredentialTests : IAsyncLifetime
{
    private const string Key = "node-test-gateway-key-0123456789";
    private NodeServer _node = null!;

    public async Task InitializeAsync() => _node = await NodeServer.StartAsync(new Dictionary<string, string?> { ["Node:GatewayKey"] = Key });

    public async Task DisposeAsync() => await _node.DisposeAsync();

    private static HttpRequestMessage Completion(string? key, string? tenant = null)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, "v1/completions")
        {
            Content = JsonContent.Create(new { model = NodeServer.ModelId, prompt = "Hello", max_tokens = 4, temperature = 0 }),
        };
        if (key is not null) request.Headers.Add("X-Serving-Gateway-Key", key);
        if (tenant is not null) request.Headers.Add("X-Serving-Tenant", tenant);
        return request;
    }

    [Fact]
    public async Task Request_WithoutOrWithAWrongCredential_Is401WithTheTablesCode()
    {
        foreach (var (key, tenant) in new (string?, string?)[] { (null, null), (null, "someone-else"), ("wrong-key-wrong-key-wrong", "someone-else"), (Key + "x", null), (Key[..^1], null) })
        {
            using var response = await _node.Http.SendAsync(Completion(key, tenant));
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
            var error = JsonNode.Parse(await response.Content.ReadAsStringAsync())!["error"]!;
            Assert.Equal("gateway_credential_required", error["code"]!.GetValue<string>());
            Assert.Equal("invalid_request_error", error["type"]!.GetValue<string>());
        }
        // Every other route of the node too, not only the OpenAI ones.
        using var status = await _node.Http.GetAsync("node/status");
        Assert.Equal(HttpStatusCode.Unauthorized, status.StatusCode);
        using var models = await _node.Http.GetAsync("v1/models");
        Assert.Equal(HttpStatusCode.Unauthorized, models.StatusCode);
    }

    [Fact]
    public async Task Request_WithTheCredential_IsServed_AndProbesAndMetricsNeedNone()
    {
        using var response = await _node.Http.SendAsync(Completion(Key, "tenant-a"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.NotNull(JsonNode.Parse(await response.Content.ReadAsStringAsync())!["choices"]![0]!["text"]);
        foreach (var path in new[] { "health/live", "health/ready", "metrics" })
        {
            using var open = await _node.Http.GetAsync(path);
            Assert.Equal(HttpStatusCode.OK, open.StatusCode);
        }
    }
}
