using System.Net;
using Serving.Gateway.Tests.Infrastructure;

using Serving.Tests.Shared;

namespace Serving.Gateway.Tests.Resilience;

/// <summary>Its own redis-server, killed and restarted mid-test (not the shared one).</summary>
public sealed class RedisOutageTests
{
    [Fact]
    public async Task RedisRestart_RoutingContinuesFromLastView_Upload503ThenSucceeds()
    {
        using var redis = new RedisServer();
        string baseConfig = TinyPeft.WriteBaseConfig();
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString, new() { ["Gateway:BaseModels:fake"] = baseConfig });
        await using var n1 = await FakeNode.StartAsync(redis.ConnectionString, gw.RegistryPrefix, "n1");
        await gw.WaitForNodesAsync("n1");
        using var a = gw.Client(GatewayHost.KeyA);

        using (var up = await a.PostAsync("/v1/adapters/first", TinyPeft.Upload("fake")))
            Assert.True(up.StatusCode == HttpStatusCode.Created, await up.Content.ReadAsStringAsync());
        using (var r = await Chat.SendAsync(a, "fake:first")) Assert.Equal(HttpStatusCode.OK, r.StatusCode);

        redis.Kill();
        // Longer than the node TTL (1 s): the view must not drop nodes just because Redis is gone.
        await Task.Delay(TimeSpan.FromSeconds(1.5));
        using (var r = await Chat.SendAsync(a, "fake")) Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        using (var r = await Chat.SendAsync(a, "fake:first")) Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        using (var up = await a.PostAsync("/v1/adapters/second", TinyPeft.Upload("fake")))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, up.StatusCode);
            Assert.Contains("store_unavailable", await up.Content.ReadAsStringAsync());
            Assert.NotNull(up.Headers.RetryAfter);
        }

        redis.Restart();
        Assert.Equal(HttpStatusCode.Created, await UploadOnceStoreIsBackAsync(a, "second"));
        using (var r = await Chat.SendAsync(a, "fake:second")) Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        Assert.Equal(4, n1.Received.Count);
    }

    [Fact]
    public async Task RedisRestartedEmpty_NodesThatHaveNotBeatenYet_KeepBeingRouted()
    {
        // A Redis restarted without persistence holds no heartbeats until each node beats again. The node here beats
        // only when told to, so after the restart the registry stays empty: the gateway must keep routing to it for
        // RecoveryGrace instead of answering 503 (before the grace it dropped the whole view on the first read).
        using var redis = new RedisServer();
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString, new()
        {
            ["Gateway:BaseModels:fake"] = TinyPeft.WriteBaseConfig(),
            ["Gateway:Routing:RecoveryGrace"] = "00:00:30",
        });
        await using var n1 = await FakeNode.StartAsync(redis.ConnectionString, gw.RegistryPrefix, "n1", heartbeat: false);
        n1.HeartbeatTtl = TimeSpan.FromSeconds(30);
        await n1.PublishAsync();
        await gw.WaitForNodesAsync("n1");
        using var a = gw.Client(GatewayHost.KeyA);
        using (var r = await Chat.SendAsync(a, "fake")) Assert.Equal(HttpStatusCode.OK, r.StatusCode);

        redis.Kill();
        await Task.Delay(TimeSpan.FromSeconds(1));
        redis.Restart();
        // The store is back once an upload succeeds; the registry read that follows finds no heartbeat at all.
        Assert.Equal(HttpStatusCode.Created, await UploadOnceStoreIsBackAsync(a, "after-restart"));
        await Task.Delay(TimeSpan.FromMilliseconds(500)); // several full reads (every 100 ms) of the empty registry
        for (var i = 0; i < 3; i++)
        {
            using var r = await Chat.SendAsync(a, "fake");
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        }
    }

    /// <summary>Retries an upload every 200 ms for up to 20 s while the store comes back; returns the last status.</summary>
    private static async Task<HttpStatusCode> UploadOnceStoreIsBackAsync(HttpClient client, string name)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        HttpStatusCode status;
        do
        {
            await Task.Delay(200);
            using var up = await client.PostAsync($"/v1/adapters/{name}", TinyPeft.Upload("fake"));
            status = up.StatusCode;
        }
        while (status != HttpStatusCode.Created && DateTime.UtcNow < deadline);
        return status;
    }
}
