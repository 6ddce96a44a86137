using System.Net;
using System.Text.Json.Nodes;
using Xunit;

namespace Serving.Inference.Node.Tests.Http;

/// <summary>A node with one KV slot and a queue of one: cancellation frees the slot, a full queue answers 429.</summary>
public sealed class AdmissionTests : IAsyncLifetime
{
    private NodeServer _server = null!;

    public async Task InitializeAsync() => _server = await NodeServer.StartAsync(new Dictionary<string, string?>
    {
        ["Node:ModelPath"] = Models.SlowGpt2,
        ["Node:MaxBatch"] = "1",
        ["Node:MaxQueue"] = "1",
        ["Node:RetryAfter"] = "00:00:03",
    });

    public async Task DisposeAsync() => await _server.DisposeAsync();

    private static object Long(bool stream = true) => new
    {
        model = NodeServer.ModelId, prompt = "long", max_tokens = 2000, ignore_eos = true, temperature = 0, stream,
    };

    private async Task<JsonNode> StatusAsync() => JsonNode.Parse(await _server.Http.GetStringAsync("node/status"))!;

    /// <summary>Polls the status endpoint until <paramref name="done"/> holds (bounded: fails after 20 s).</summary>
    private async Task<JsonNode> WaitForStatusAsync(Func<JsonNode, bool> done)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (true)
        {
            var s = await StatusAsync();
            if (done(s)) return s;
            Assert.True(DateTime.UtcNow < deadline, $"status never reached the expected state: {s.ToJsonString()}");
            await Task.Delay(5);
        }
    }

    [Fact]
    public async Task CancelledStream_FreesItsKvSlot_WithinAStep()
    {
        using var cts = new CancellationTokenSource();
        var response = await _server.Http.SendAsync(Sse.Post("v1/completions", Long()), HttpCompletionOption.ResponseHeadersRead, cts.Token);
        var enumerator = Sse.ReadAsync(response, cts.Token).GetAsyncEnumerator(cts.Token);
        Assert.True(await enumerator.MoveNextAsync()); // generating
        // Status is published at the end of each iteration, so the first token can reach us before it: wait for it.
        var running = await WaitForStatusAsync(s => (int)s["kv"]!["slots_used"]! == 1);
        Assert.Equal(1, (int)running["kv"]!["slots_used"]!);
        Assert.Equal(1, (int)running["running_rows"]!);
        var stepsBefore = (long)running["steps"]!;

        cts.Cancel();
        response.Dispose();
        await enumerator.DisposeAsync().AsTask().ContinueWith(_ => { });

        var freed = await WaitForStatusAsync(s => (int)s["kv"]!["slots_used"]! == 0);
        Assert.Equal(0, (int)freed["running_requests"]!);
        // Far fewer steps than the 2000 tokens asked for: the request left the batch, it did not run to the end.
        Assert.True((long)freed["steps"]! - stepsBefore < 1000, $"{(long)freed["steps"]! - stepsBefore} steps ran after the cancel");
    }

    [Fact]
    public async Task FullQueue_Answers429WithRetryAfter_AndQueuedRequestStillGetsAnAnswer()
    {
        // A occupies the only slot.
        using var ctsA = new CancellationTokenSource();
        var a = await _server.Http.SendAsync(Sse.Post("v1/completions", Long()), HttpCompletionOption.ResponseHeadersRead, ctsA.Token);
        var readA = Sse.ReadAsync(a, ctsA.Token).GetAsyncEnumerator(ctsA.Token);
        Assert.True(await readA.MoveNextAsync());

        // B waits in the queue (a short request, so it finishes quickly once admitted).
        var b = _server.Http.SendAsync(Sse.Post("v1/completions", new { model = NodeServer.ModelId, prompt = "b", max_tokens = 3, ignore_eos = true }));
        await WaitForStatusAsync(s => (int)s["queue_depth"]! == 1);

        // C finds the queue full.
        using var c = await _server.Http.SendAsync(Sse.Post("v1/completions", new { model = NodeServer.ModelId, prompt = "c", max_tokens = 3 }));
        var error = await RawHttpTests.AssertErrorAsync(c, HttpStatusCode.TooManyRequests, param: null);
        // One 429 for every limit, node or gateway (docs/errors.md): OpenAI's code, the limited resource as the type.
        Assert.Equal("rate_limit_exceeded", (string)error["code"]!);
        Assert.Equal("requests", (string)error["type"]!);
        Assert.Equal(TimeSpan.FromSeconds(3), c.Headers.RetryAfter!.Delta);

        // Cancelling A lets B run: nothing is dropped.
        ctsA.Cancel();
        a.Dispose();
        await readA.DisposeAsync().AsTask().ContinueWith(_ => { });
        using var bResponse = await b;
        Assert.Equal(HttpStatusCode.OK, bResponse.StatusCode);
        var bJson = await Sse.JsonAsync(bResponse);
        Assert.Equal(3, (int)bJson["usage"]!["completion_tokens"]!);
    }
}
