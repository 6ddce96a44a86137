using System.Net;
using Serving.System.Tests.Infrastructure;

namespace Serving.System.Tests;

/// <summary>redis-server killed and restarted under a running cluster.</summary>
public sealed class RedisRestartTests
{
    [Fact]
    public async Task RedisRestart_NodesKeepServing_GatewayRoutesFromLastView_Upload503ThenSucceeds()
    {
        using var cluster = await Cluster.StartAsync();
        using var client = cluster.Client();
        using (var up = await client.PostAsync("/v1/adapters/german", AdapterUpload.Demo("german")))
            Assert.True(up.StatusCode == HttpStatusCode.Created, await up.Content.ReadAsStringAsync());

        cluster.Redis.Kill();
        // Longer than the heartbeat TTL: the gateway must not drop nodes just because Redis is gone.
        await Task.Delay(TimeSpan.Parse(Cluster.HeartbeatTtl, global::System.Globalization.CultureInfo.InvariantCulture) + TimeSpan.FromSeconds(1));
        int[] before = cluster.Nodes.Select(Cluster.ReceivedPosts).ToArray();
        for (int i = 0; i < 16; i++) // random spread: both nodes get some (all on one: p = 2^-15)
        {
            using var r = await client.SendAsync(Sse.Chat("Tell me a fortune", 8));
            Assert.True(r.StatusCode == HttpStatusCode.OK, $"request {i} during the outage: {(int)r.StatusCode} {await r.Content.ReadAsStringAsync()}");
        }
        int[] during = cluster.Nodes.Select(Cluster.ReceivedPosts).ToArray();
        Assert.All(during.Zip(before, (d, b) => d - b), d => Assert.True(d > 0, "the gateway stopped routing to a node during the outage"));

        using (var up = await client.PostAsync("/v1/adapters/spanish", AdapterUpload.Demo("spanish")))
        {
            string body = await up.Content.ReadAsStringAsync();
            Assert.True(up.StatusCode == HttpStatusCode.ServiceUnavailable, body);
            Assert.Contains("store_unavailable", body);
            Assert.NotNull(up.Headers.RetryAfter);
        }

        cluster.Redis.Restart();
        var deadline = DateTime.UtcNow.AddSeconds(20);
        HttpStatusCode status;
        string last;
        do
        {
            await Task.Delay(250);
            using var up = await client.PostAsync("/v1/adapters/spanish", AdapterUpload.Demo("spanish"));
            status = up.StatusCode;
            last = await up.Content.ReadAsStringAsync();
        }
        while (status != HttpStatusCode.Created && DateTime.UtcNow < deadline);
        Assert.True(status == HttpStatusCode.Created, last);
        using (var list = await client.GetAsync("/v1/adapters/"))
            Assert.Contains("spanish", await list.Content.ReadAsStringAsync());
        // The nodes republish into the empty Redis; the gateway's view is whole again and requests still flow.
        await cluster.WaitForNodesAsync(2);
        using (var r = await client.SendAsync(Sse.Chat("Tell me a fortune", 8)))
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
    }
}
