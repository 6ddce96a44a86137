using System.Net;
using System.Text;
using Serving.Gateway.Tests.Infrastructure;

namespace Serving.Gateway.Tests.RateLimiting;

/// <summary>
/// The node's extension fields reach it byte for byte (real gateway, fake node, redis-server); what their
/// <c>usage.generated_tokens</c> costs is in <see cref="TokenAccountingTests"/>.
/// </summary>
[Collection(RedisCollection.Name)]
public sealed class ExtensionFieldsTests(RedisFixture redis)
{
    private static byte[] Body(int maxTokens) => Encoding.UTF8.GetBytes(
        $$"""{"model":"fake","messages":[{"role":"user","content":"hi"}],"max_tokens":{{maxTokens}},"reward_head":"public/positive","return_token_rewards":true,"alignment":{"method":"darwin","variants":5,"interval":40,"iterations":1},"early_exit":{"criterion":"probe","threshold":0.9},"x_unknown":[1,{"a":null}]}""");

    private static async Task<HttpResponseMessage> PostAsync(HttpClient client, byte[] body)
    {
        var content = new ByteArrayContent(body);
        content.Headers.ContentType = new("application/json");
        return await client.PostAsync("/v1/chat/completions", content);
    }

    [Fact]
    public async Task ExtensionFields_ReachTheNodeByteForByte_AndRoutingWorks()
    {
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString);
        await using var n1 = await FakeNode.StartAsync(redis.ConnectionString, gw.RegistryPrefix, "n1");
        await gw.WaitForNodesAsync("n1");
        using var a = gw.Client(GatewayHost.KeyA);
        var body = Body(10);
        using var r = await PostAsync(a, body);
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        var received = Assert.Single(n1.Received);
        Assert.Equal(body, received.Body);
        Assert.Equal("tenant-a", received.Tenant);
    }
}
