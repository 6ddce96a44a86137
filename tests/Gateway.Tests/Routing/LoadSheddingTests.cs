using System.Net;
using System.Text;
using Serving.AdapterStore.Registry;
using Serving.AdapterStore.Storage;
using Serving.Contracts.Registry;
using Serving.Gateway.Tests.Infrastructure;
using StackExchange.Redis;

namespace Serving.Gateway.Tests.Routing;

/// <summary>
/// The gateway sheds before a node collapses: with as many requests in flight to every node of a model as the nodes
/// publish they can hold (<c>max_running + max_queue</c>), the next request is refused by the gateway itself (429 with
/// <c>Retry-After</c>) and never reaches a node. Requests are held open by the fake node (a stream that stops after its
/// first chunk until the caller leaves), so nothing depends on timing.
/// </summary>
[Collection(RedisCollection.Name)]
public sealed class LoadSheddingTests(RedisFixture redis)
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);

    /// <summary>A stream the fake node holds after one chunk; returns once that chunk reached the client.</summary>
    private static async Task<(HttpResponseMessage Response, StreamReader Reader)> HoldAsync(HttpClient client)
    {
        var request = Chat.Request("fake", stream: true);
        request.Content = new StringContent("""{"model":"fake","messages":[{"role":"user","content":"hi"}],"stream":true,"x_fake_hang_after":1}""", Encoding.UTF8, "application/json");
        var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var reader = new StreamReader(await response.Content.ReadAsStreamAsync(), Encoding.UTF8);
        Assert.StartsWith("data: ", await reader.ReadLineAsync().WaitAsync(Bound));
        return (response, reader);
    }

    [Fact]
    public async Task EveryNodeAtItsLimit_GatewayAnswers429WithRetryAfter_AndTheNodeNeverSeesIt()
    {
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString);
        await using var n1 = await FakeNode.StartAsync(redis.ConnectionString, gw.RegistryPrefix, "n1");
        n1.MaxRunning = 1;
        n1.MaxQueue = 1;
        await n1.PublishAsync();
        await gw.WaitForNodesAsync("n1");
        await gw.WaitForAsync(v => v.Current.Nodes.TryGetValue("n1", out var e) && e.Heartbeat.MaxQueue == 1);
        using var client = gw.Client(GatewayHost.KeyA);

        var (a, readA) = await HoldAsync(client);
        var (b, readB) = await HoldAsync(client);
        Assert.Equal(2, n1.Received.Count);

        using var refused = await Chat.SendAsync(client, "fake", stream: true);
        Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
        Assert.Equal(TimeSpan.FromSeconds(2), refused.Headers.RetryAfter!.Delta); // Gateway:RetryAfter's default
        var body = await refused.Content.ReadAsStringAsync();
        Assert.Equal("rate_limit_exceeded", Chat.ErrorCode(body)); // the node's own queue-full refusal reads the same
        Assert.Equal(2, n1.Received.Count);

        // Room again once a held request ends: the gateway forwards again (polled: the forward's end is the gateway's to notice).
        readA.Dispose();
        a.Dispose();
        var deadline = DateTime.UtcNow + Bound;
        HttpStatusCode status;
        do
        {
            using var r = await Chat.SendAsync(client, "fake");
            status = r.StatusCode;
            if (status != HttpStatusCode.OK) await Task.Delay(20);
        }
        while (status != HttpStatusCode.OK && DateTime.UtcNow < deadline);
        Assert.Equal(HttpStatusCode.OK, status);
        readB.Dispose();
        b.Dispose();
    }

    [Fact]
    public async Task ShedAtNodeLimitOff_RequestReachesTheNode()
    {
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString, new() { ["Gateway:Routing:ShedAtNodeLimit"] = "false" });
        await using var n1 = await FakeNode.StartAsync(redis.ConnectionString, gw.RegistryPrefix, "n1");
        n1.MaxRunning = 1;
        n1.MaxQueue = 1;
        await n1.PublishAsync();
        await gw.WaitForNodesAsync("n1");
        await gw.WaitForAsync(v => v.Current.Nodes.TryGetValue("n1", out var e) && e.Heartbeat.MaxQueue == 1);
        using var client = gw.Client(GatewayHost.KeyA);

        var (a, readA) = await HoldAsync(client);
        var (b, readB) = await HoldAsync(client);
        using var third = await Chat.SendAsync(client, "fake");
        Assert.Equal(HttpStatusCode.OK, third.StatusCode); // the fake node has no queue limit of its own: it answers
        Assert.Equal(3, n1.Received.Count);
        foreach (var d in new IDisposable[] { readA, a, readB, b }) d.Dispose();
    }

    [Fact]
    public async Task OnlyNodeRefusesConnection_503CarriesRetryAfter()
    {
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString);
        using var mux = await ConnectionMultiplexer.ConnectAsync(redis.ConnectionString);
        var registry = new NodeRegistry(mux, new RegistryKeys(gw.RegistryPrefix));
        await registry.PublishHeartbeatAsync(new NodeHeartbeat
        {
            NodeId = "dead", BaseUrl = $"http://127.0.0.1:{EmbeddedGarnet.FreePort()}/", Model = "fake", Timestamp = DateTimeOffset.UtcNow,
        }, TimeSpan.FromSeconds(30));
        await gw.WaitForNodesAsync("dead");
        using var client = gw.Client(GatewayHost.KeyA);

        using var r = await Chat.SendAsync(client, "fake");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, r.StatusCode);
        Assert.Equal("no_node_available", Chat.ErrorCode(await r.Content.ReadAsStringAsync()));
        Assert.Equal(TimeSpan.FromSeconds(2), r.Headers.RetryAfter!.Delta);
        await registry.RemoveAsync("dead");
    }
}
