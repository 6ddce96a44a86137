using System.Net;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Serving.Gateway.RateLimiting;
using Serving.Gateway.Tests.Infrastructure;

namespace Serving.Gateway.Tests.RateLimiting;

/// <summary>
/// The node's extension fields reach it byte for byte, and its <c>usage.generated_tokens</c> (alignment candidates and
/// beams) settles the tenant's token budget beyond what admission charged (real gateway, fake node, redis-server).
/// </summary>
[Collection(RedisCollection.Name)]
public sealed class GeneratedTokensTests(RedisFixture redis)
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

    [Theory]
    [InlineData(null)]
    [InlineData(8)]
    [InlineData(5000)]
    public async Task GeneratedTokens_BeyondMaxTokensTimesN_AreChargedAfterTheResponse(int? generated)
    {
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString, new() { ["Gateway:RateLimits:TokensPerMinute"] = "600" });
        await using var n1 = await FakeNode.StartAsync(redis.ConnectionString, gw.RegistryPrefix, "n1");
        n1.GeneratedTokens = generated;
        await gw.WaitForNodesAsync("n1");
        var budget = gw.Services.GetRequiredService<TokenBudget>();
        using var a = gw.Client(GatewayHost.KeyA);
        var first = Body(10);
        using (var r = await PostAsync(a, first)) Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        int admission = TokenBudget.Estimate(first.Length, 10, 1);
        var available = budget.Available("tenant-a");
        if (generated is null or <= 10)
        {
            // Nothing beyond max_tokens × n: only the admission charge (the bucket only refills meanwhile).
            Assert.True(available >= 600 - admission, $"available {available}, admission {admission}");
        }
        else
        {
            // 4990 beyond max_tokens: the bucket is drained (it keeps no debt), so the next request waits for the refill.
            Assert.True(available < 600 - admission - 400, $"available {available}");
            using var next = await PostAsync(a, Body(100));
            Assert.Equal(HttpStatusCode.TooManyRequests, next.StatusCode);
            Assert.Single(n1.Received);
        }
    }

    [Fact]
    public void Tap_FindsTheCountAcrossWriteBoundaries_AndNeverInsideText()
    {
        var json = """{"choices":[{"message":{"content":"say \"generated_tokens\":999 please"}}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7,"generated_tokens":1234}}""";
        var bytes = Encoding.UTF8.GetBytes(json);
        for (int cut = 1; cut < bytes.Length; cut += 7)
        {
            using var sink = new MemoryStream();
            var tap = new GeneratedTokensTap(sink);
            tap.Write(bytes.AsSpan(0, cut));
            tap.Write(bytes.AsSpan(cut));
            Assert.Equal(1234, tap.GeneratedTokens);
            Assert.Equal(bytes, sink.ToArray());
        }

        // A stream: usage null in every chunk but the usage chunk; spaces after the colon.
        var sse = "data: {\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"generated_tokens\": 42}}\n\ndata: [DONE]\n\n";
        var streamTap = new GeneratedTokensTap(Stream.Null);
        foreach (var b in Encoding.UTF8.GetBytes(sse)) streamTap.Write([b]);
        Assert.Equal(42, streamTap.GeneratedTokens);

        var plain = new GeneratedTokensTap(Stream.Null);
        plain.Write(Encoding.UTF8.GetBytes("""{"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"""));
        Assert.Null(plain.GeneratedTokens);
    }
}
