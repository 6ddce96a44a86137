using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Serving.Gateway.Routing;
using StackExchange.Redis;
using Serving.Contracts.Registry;
using Serving.Gateway.Tests.Infrastructure;

namespace Serving.Gateway.Tests.Routing;

/// <summary>Gateway + fake nodes (stand-ins for the real node) + redis-server on loopback.</summary>
[Collection(RedisCollection.Name)]
public sealed class RoutingEndToEndTests(RedisFixture redis)
{
    [Fact]
    public async Task Route_HotAdapterUnderMixedLoad_AtLeast90PercentOnHolder()
    {
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString);
        await using var n1 = await FakeNode.StartAsync(redis.ConnectionString, gw.RegistryPrefix, "n1");
        await using var n2 = await FakeNode.StartAsync(redis.ConnectionString, gw.RegistryPrefix, "n2");
        n2.Residency = new AdapterResidency { Device = ["tenant-a/hot"] };
        await n2.PublishAsync();
        await gw.PublishAdapterAsync("tenant-a", "hot");
        await gw.PublishAdapterAsync("tenant-a", "other");
        await gw.WaitForNodesAsync("n1", "n2");
        using var client = gw.Client(GatewayHost.KeyA);

        // 60 requests, 8 at a time: half for the hot adapter, the rest base-model and another adapter.
        using var gate = new SemaphoreSlim(8);
        var tasks = Enumerable.Range(0, 60).Select(async i =>
        {
            await gate.WaitAsync();
            try
            {
                string model = (i % 4) switch { 0 or 1 => "fake:hot", 2 => "fake", _ => "fake:other" };
                using var r = await Chat.SendAsync(client, model, user: $"u{i}");
                Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            }
            finally
            {
                gate.Release();
            }
        });
        await Task.WhenAll(tasks);

        int hotOnN2 = n2.Received.Count(r => r.Model == "fake:tenant-a/hot");
        int hotOnN1 = n1.Received.Count(r => r.Model == "fake:tenant-a/hot");
        Assert.Equal(30, hotOnN1 + hotOnN2);
        Assert.True(hotOnN2 >= 27, $"hot adapter: {hotOnN2} of 30 on the holder");
        Assert.Equal(60, n1.Received.Count + n2.Received.Count);

        using var anonymous = gw.Client(null);
        string metrics = "";
        for (int i = 0; i < 20 && !metrics.Contains("residency=\"device\""); i++)
        {
            if (i > 0) await Task.Delay(200);
            metrics = await anonymous.GetStringAsync("/metrics");
        }
        Assert.Contains("serving_gateway_routing_decisions_total{otel_scope_name=\"Serving.Gateway\",residency=\"device\"}", metrics);
    }

    [Fact]
    public async Task Route_ColdAdapter_SettlesOnOneNode()
    {
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString);
        await using var n1 = await FakeNode.StartAsync(redis.ConnectionString, gw.RegistryPrefix, "n1");
        await using var n2 = await FakeNode.StartAsync(redis.ConnectionString, gw.RegistryPrefix, "n2");
        await gw.PublishAdapterAsync("tenant-a", "cold");
        await gw.WaitForNodesAsync("n1", "n2");
        using var client = gw.Client(GatewayHost.KeyA);
        for (int i = 0; i < 20; i++)
        {
            using var r = await Chat.SendAsync(client, "fake:cold");
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        }
        Assert.True(n1.Received.Count == 20 || n2.Received.Count == 20, $"split {n1.Received.Count}/{n2.Received.Count}");
    }

    [Fact]
    public async Task Forward_RewritesModelToCanonical_AddsTenant_StripsKey()
    {
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString);
        await using var n1 = await FakeNode.StartAsync(redis.ConnectionString, gw.RegistryPrefix, "n1");
        await gw.PublishAdapterAsync("tenant-a", "mine");
        await gw.PublishAdapterAsync("public", "shared");
        await gw.WaitForNodesAsync("n1");
        using var client = gw.Client(GatewayHost.KeyA);
        foreach (var model in new[] { "fake:mine", "fake:tenant-a/mine", "fake:public/shared", "fake" })
        {
            using var r = await Chat.SendAsync(client, model);
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        }
        var got = n1.Received.ToArray();
        Assert.Equal(["fake:tenant-a/mine", "fake:tenant-a/mine", "fake:public/shared", "fake"], got.Select(g => g.Model));
        Assert.All(got, g => Assert.Equal("tenant-a", g.Tenant));
        Assert.All(got, g => Assert.False(g.HadAuthorization));
    }

    [Fact]
    public async Task Forward_ClientServingHeadersDropped_GatewayCredentialAndTenantAdded()
    {
        const string nodeKey = "gateway-node-key-0123456789";
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString, new() { ["Gateway:Routing:NodeKey"] = nodeKey });
        await using var n1 = await FakeNode.StartAsync(redis.ConnectionString, gw.RegistryPrefix, "n1");
        await gw.WaitForNodesAsync("n1");
        using var client = gw.Client(GatewayHost.KeyA);
        using var request = Chat.Request("fake");
        // A client posing as another tenant and guessing the credential, plus a header of its own in the gateway's namespace.
        request.Headers.Add("X-Serving-Tenant", "tenant-b");
        request.Headers.Add("X-Serving-Gateway-Key", "guessed-key-guessed-key");
        request.Headers.Add("x-serving-adapter", "tenant-b/secret");
        using var r = await client.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        var got = Assert.Single(n1.Received);
        Assert.Equal("tenant-a", got.Tenant);
        Assert.Equal(nodeKey, got.GatewayKey);
        Assert.Equal(["X-Serving-Gateway-Key", "X-Serving-Tenant"], got.ServingHeaders!);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Forward_NodesInternalResponseHeaders_HiddenUnlessConfigured(bool expose)
    {
        // Hidden is the default: the false case sets nothing, so a changed default fails here too.
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString, expose ? new() { ["Gateway:Routing:ExposeInternalHeaders"] = "true" } : null);
        await using var n1 = await FakeNode.StartAsync(redis.ConnectionString, gw.RegistryPrefix, "n1");
        await gw.WaitForNodesAsync("n1");
        using var client = gw.Client(GatewayHost.KeyA);
        foreach (var stream in (bool[])[false, true])
        {
            using var r = await client.SendAsync(Chat.Request("fake", stream: stream), HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            Assert.Equal(expose, r.Headers.TryGetValues("X-Serving-Node", out var node));
            if (expose) Assert.Equal("n1", Assert.Single(node!));
            Assert.Equal("fake@1", Assert.Single(r.Headers.GetValues("X-Serving-Adapter")));
            await r.Content.ReadAsStringAsync();
        }
        Assert.Equal(2, n1.Received.Count);
    }

    [Fact]
    public async Task Registry_NewNodeJoinsWithoutRestart_SilentNodeLeavesWithinTtl()
    {
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString);
        await using var n1 = await FakeNode.StartAsync(redis.ConnectionString, gw.RegistryPrefix, "n1");
        await gw.WaitForNodesAsync("n1");
        await using var n2 = await FakeNode.StartAsync(redis.ConnectionString, gw.RegistryPrefix, "n2");
        n2.HeartbeatTtl = TimeSpan.FromSeconds(1);
        await n2.PublishAsync();
        await gw.WaitForNodesAsync("n1", "n2");

        // Counted in the gateway's full registry reads, not in seconds: once Redis has expired n2's key, the next read
        // that starts must drop it. The read applying the drop is recorded at the moment the view changes.
        var watcher = (RegistryWatcher)gw.Services.GetRequiredService<INodeView>();
        long droppedByRead = -1;
        watcher.DestinationsChanged += s =>
        {
            if (!s.Nodes.ContainsKey("n2")) Interlocked.CompareExchange(ref droppedByRead, watcher.FullReadsStarted, -1);
        };
        await n2.KillAsync();
        await using var mux = await ConnectionMultiplexer.ConnectAsync(redis.ConnectionString);
        var db = mux.GetDatabase();
        var key = new RegistryKeys(gw.RegistryPrefix).Node("n2");
        var deadline = DateTime.UtcNow.AddSeconds(30); // Redis's TTL, not ours: only a hang can reach this
        while (await db.KeyExistsAsync(key))
        {
            Assert.True(DateTime.UtcNow < deadline, "Redis never expired the silent node's key");
            await Task.Delay(20);
        }
        long expiredBeforeRead = watcher.FullReadsStarted + 1; // this read (or an earlier one) is the first to start after the expiry
        await gw.WaitForNodesAsync("n1");
        long dropped = Interlocked.Read(ref droppedByRead);
        Assert.True(dropped > 0 && dropped <= expiredBeforeRead,
            $"n2 left at full read {dropped}; its key had expired before read {expiredBeforeRead} started");

        using var client = gw.Client(GatewayHost.KeyA);
        for (int i = 0; i < 5; i++)
        {
            using var r = await Chat.SendAsync(client, "fake");
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        }
        Assert.Equal(5, n1.Received.Count);
    }

    [Fact]
    public async Task Forward_OnlyNodesOfAnotherModel_503NotForwarded()
    {
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString);
        await using var a = await FakeNode.StartAsync(redis.ConnectionString, gw.RegistryPrefix, "a", model: "model-a");
        await using var b = await FakeNode.StartAsync(redis.ConnectionString, gw.RegistryPrefix, "b", model: "model-b");
        await gw.WaitForNodesAsync("a", "b");
        await b.KillAsync();
        await gw.WaitForNodesAsync("a");
        using var client = gw.Client(GatewayHost.KeyA);
        using var r = await Chat.SendAsync(client, "model-b");
        Assert.True(r.StatusCode == HttpStatusCode.ServiceUnavailable,
            $"{(int)r.StatusCode}: {await r.Content.ReadAsStringAsync()}; received by a: {a.Received.Count}, by b: {b.Received.Count}; view [{string.Join(",", gw.Services.GetRequiredService<INodeView>().Current.Nodes.Keys)}]");
        Assert.Empty(a.Received);
    }

    [Fact]
    public async Task Forward_NoNodeForModel_503WithOpenAiError()
    {
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString);
        await using var n1 = await FakeNode.StartAsync(redis.ConnectionString, gw.RegistryPrefix, "n1");
        await gw.WaitForNodesAsync("n1");
        await n1.KillAsync();
        await gw.WaitForNodesAsync();
        using var client = gw.Client(GatewayHost.KeyA);
        using var r = await Chat.SendAsync(client, "fake");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, r.StatusCode);
        Assert.NotNull(r.Headers.RetryAfter);
        Assert.Equal("no_node_available", Chat.ErrorCode(await r.Content.ReadAsStringAsync()));

        using var unknown = await Chat.SendAsync(client, "nonexistent-model");
        Assert.Equal(HttpStatusCode.NotFound, unknown.StatusCode);
        Assert.Equal("model_not_found", Chat.ErrorCode(await unknown.Content.ReadAsStringAsync()));
    }
}
