using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Serving.AdapterStore.Registry;
using Serving.Contracts.Registry;
using Serving.Inference.Node.Registry;
using Serving.Inference.Node.Tests.Http;
using Serving.Tests.Shared;
using StackExchange.Redis;
using Xunit;

namespace Serving.Inference.Node.Tests.Registry;

/// <summary>A real node on loopback publishing heartbeats to a real redis-server, read back with the gateway's reader.</summary>
public sealed class HeartbeatTests : IDisposable
{
    private readonly RedisServer _redis = new();
    private readonly ConnectionMultiplexer _client;

    public HeartbeatTests() => _client = ConnectionMultiplexer.Connect(_redis.ConnectionString);

    public void Dispose()
    {
        _client.Dispose();
        _redis.Dispose();
    }

    private Task<NodeServer> StartNodeAsync(string prefix, string id) => NodeServer.StartAsync(new Dictionary<string, string?>
    {
        ["Node:ModelPath"] = Models.SlowGpt2,
        ["Node:Redis"] = _redis.ConnectionString,
        ["Node:Id"] = id,
        ["Node:RegistryPrefix"] = prefix,
        ["Node:HeartbeatInterval"] = "00:00:00.200",
        ["Node:HeartbeatTtl"] = "00:00:01",
    });

    private static async Task<NodeHeartbeat> WaitForAsync(NodeRegistry registry, string id, Func<NodeHeartbeat, bool> condition)
    {
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (true)
        {
            var hb = (await registry.ReadAllAsync()).FirstOrDefault(h => h.NodeId == id);
            if (hb is not null && condition(hb)) return hb;
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"no matching heartbeat from {id}; last: {hb}");
            await Task.Delay(50);
        }
    }

    [Fact]
    public async Task Node_PublishesIdentityAndLoad_AndLeavesOnStop()
    {
        var registry = new NodeRegistry(_client, new RegistryKeys("hb1"));
        var events = new List<NodeRegistryEvent>();
        await using var sub = await registry.SubscribeAsync(e => { lock (events) events.Add(e); });
        var node = await StartNodeAsync("hb1", "node-a");
        try
        {
            var idle = await WaitForAsync(registry, "node-a", _ => true);
            Assert.Equal(node.Address.ToString(), idle.BaseUrl);
            Assert.Equal(NodeServer.ModelId, idle.Model);
            Assert.False(string.IsNullOrEmpty(idle.Version));
            Assert.True(idle.Ready);
            Assert.Equal(16, idle.MaxRunning);
            Assert.Equal(64, idle.MaxQueue); // Node:MaxQueue's default: with max_running, what the gateway may have in flight here
            Assert.Equal(0, idle.Running);
            Assert.Empty(idle.Adapters.Device);
            Assert.InRange(idle.Timestamp, DateTimeOffset.UtcNow.AddSeconds(-5), DateTimeOffset.UtcNow.AddSeconds(1));

            // Load shows up: a long stream holds a row and a KV slot. On a fast machine a stream can end between two
            // heartbeats, so streams are started one after another until a heartbeat taken during one shows it (each
            // 2000-token stream outlasts several 200 ms intervals on any machine this runs on; the loop only removes
            // the dependence on that guess).
            NodeHeartbeat? busy = null;
            for (var attempt = 0; attempt < 5 && busy is null; attempt++)
            {
                using var response = await node.Http.SendAsync(Sse.Post("v1/completions", new Dictionary<string, object?>
                {
                    ["model"] = NodeServer.ModelId, ["prompt"] = "load", ["max_tokens"] = 2000, ["ignore_eos"] = true, ["stream"] = true,
                }), HttpCompletionOption.ResponseHeadersRead);
                response.EnsureSuccessStatusCode();
                var stream = Sse.ReadAsync(response, CancellationToken.None).GetAsyncEnumerator();
                Assert.True(await stream.MoveNextAsync()); // the row is generating
                var streamDone = Task.Run(async () => { while (await stream.MoveNextAsync()) { } });
                while (!streamDone.IsCompleted && busy is null)
                {
                    var hb = (await registry.ReadAllAsync()).FirstOrDefault(h => h.NodeId == "node-a");
                    if (hb is not null && hb.Running >= 1) busy = hb;
                    else await Task.Delay(20);
                }
                response.Dispose(); // the client leaves; the row is freed
                await streamDone.ContinueWith(_ => { });
            }
            Assert.NotNull(busy);
            Assert.True(busy.KvUsage > 0);

            await node.StopAsync();
            // Orderly departure: gone from the live set at once and announced, well within the TTL.
            var deadline = DateTime.UtcNow.AddSeconds(1);
            while ((await registry.ReadAllAsync()).Any(h => h.NodeId == "node-a"))
            {
                Assert.True(DateTime.UtcNow < deadline, "node still registered after stopping");
                await Task.Delay(20);
            }
            await Task.Delay(100);
            lock (events) Assert.Contains(events, e => e.NodeId == "node-a" && e.Heartbeat is null);
        }
        finally
        {
            await node.DisposeAsync();
        }
    }

    [Fact]
    public async Task HeartbeatKey_CarriesTheConfiguredTtl()
    {
        var registry = new NodeRegistry(_client, new RegistryKeys("hb2"));
        await using var node = await StartNodeAsync("hb2", "node-b");
        await WaitForAsync(registry, "node-b", _ => true);
        // The remaining TTL depends on when the last beat landed (a loaded machine delays beats, and a beat late by more
        // than the TTL lets the key lapse until the next one), so sample it for a while: right after a beat it is the
        // configured 1 s, and it never exceeds it. Samples that find the key lapsed say nothing about the TTL set.
        var most = TimeSpan.Zero;
        var present = 0;
        var deadline = DateTime.UtcNow.AddSeconds(30);
        for (var i = 0; i < 30 || present < 10; i++)
        {
            Assert.True(DateTime.UtcNow < deadline, $"the heartbeat key was present in only {present} of {i} samples");
            var ttl = await _client.GetDatabase().KeyTimeToLiveAsync(registry.Keys.Node("node-b"));
            await Task.Delay(50);
            if (ttl is null) continue;
            present++;
            Assert.True(ttl.Value <= TimeSpan.FromSeconds(1), $"TTL {ttl} exceeds the configured 1 s");
            if (ttl.Value > most) most = ttl.Value;
        }
        Assert.InRange(most, TimeSpan.FromMilliseconds(500), TimeSpan.FromSeconds(1));
    }

    [Fact]
    public async Task WithoutRedis_NoHeartbeatService()
    {
        await using var node = await NodeServer.StartAsync();
        Assert.DoesNotContain(node.Services.GetServices<IHostedService>(), s => s.GetType().Name == "NodeHeartbeats");
        Assert.IsAssignableFrom<IAdapterResidencySource>(node.Services.GetRequiredService<IAdapterResidencySource>());
    }
}
