using System.Net;
using System.Text.Json.Nodes;
using Microsoft.Extensions.DependencyInjection;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;
using Xunit;

namespace Serving.Inference.Node.Tests.Http;

/// <summary>A node with one KV slot and a queue of one: cancellation frees the slot, a full queue answers 429.</summary>
public sealed class AdmissionTests
{
    private static object Long(bool stream = true) => new
    {
        model = NodeServer.ModelId, prompt = "long", max_tokens = 2000, ignore_eos = true, temperature = 0, stream,
    };

    /// <summary>Polls the status endpoint until <paramref name="done"/> holds (bounded: fails after 20 s).</summary>
    private static async Task<JsonNode> WaitForStatusAsync(HttpClient http, Func<JsonNode, bool> done)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (true)
        {
            var s = JsonNode.Parse(await http.GetStringAsync("node/status"))!;
            if (done(s)) return s;
            Assert.True(DateTime.UtcNow < deadline, $"status never reached the expected state: {s.ToJsonString()}");
            await Task.Delay(5);
        }
    }

    /// <summary>
    /// Paced by a gate on the scheduler thread (a scheduler observer that blocks in <c>OnOutputToken</c> until the test
    /// lets another token through), so the 2000-token request cannot run to its end however fast or slow the machine
    /// is: the test sees it running, cancels it, then lets the scheduler step one token at a time until the slot is free.
    /// </summary>
    [Fact]
    public async Task CancelledStream_FreesItsKvSlot_WithinAStep()
    {
        var gate = new TokenGate(free: 3);
        await using var server = await NodeServer.StartAsync(new Dictionary<string, string?>
        {
            ["Node:ModelPath"] = Models.TinyGpt2,
            ["Node:MaxBatch"] = "1",
            ["Node:MaxQueue"] = "1",
        }, services => services.AddSingleton<ISchedulerObserver>(gate));
        using var opensBeforeTheServerStops = gate; // disposed first: a failed assertion must not leave the scheduler held
        async Task<JsonNode> Status() => JsonNode.Parse(await server.Http.GetStringAsync("node/status"))!;

        using var cts = new CancellationTokenSource();
        var response = await server.Http.SendAsync(Sse.Post("v1/completions", Long()), HttpCompletionOption.ResponseHeadersRead, cts.Token);
        var enumerator = Sse.ReadAsync(response, cts.Token).GetAsyncEnumerator(cts.Token);
        Assert.True(await enumerator.MoveNextAsync()); // generating
        // The gate holds the scheduler after a few tokens, inside a step: the request stays running until released.
        await gate.WaitUntilBlockedAsync();
        JsonNode running;
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while ((int)(running = await Status())["kv"]!["slots_used"]! != 1)
        {
            Assert.True(DateTime.UtcNow < deadline, $"the held request never showed in the status: {running.ToJsonString()}");
            await Task.Delay(5);
        }
        Assert.Equal(1, (int)running["running_rows"]!);

        cts.Cancel();
        response.Dispose();
        await enumerator.DisposeAsync().AsTask().ContinueWith(_ => { });

        // One token at a time until the slot is free: however long the node takes to notice the disconnect, the request
        // can only have run as many steps as were let through.
        var released = 0;
        JsonNode freed;
        while ((int)(freed = await Status())["kv"]!["slots_used"]! != 0)
        {
            Assert.True(released < 1000, $"the cancelled request still held its slot after {released} more tokens: {freed.ToJsonString()}");
            gate.Release(1);
            released++;
            await Task.Delay(2);
        }
        gate.Open();
        Assert.Equal(0, (int)freed["running_requests"]!);
    }

    /// <summary>Lets <c>free</c> output tokens through, then blocks the scheduler thread in each <c>OnOutputToken</c> until released.</summary>
    private sealed class TokenGate(int free) : ISchedulerObserver, IDisposable
    {
        private readonly SemaphoreSlim _tokens = new(free);
        private readonly SemaphoreSlim _blocked = new(0);
        private volatile bool _open;

        public void OnOutputToken(TimeSpan sincePrevious)
        {
            if (_open || _tokens.Wait(0)) return;
            _blocked.Release();
            _tokens.Wait();
        }

        public Task WaitUntilBlockedAsync() => _blocked.WaitAsync(TimeSpan.FromSeconds(30)).ContinueWith(t => Assert.True(t.Result, "the scheduler never reached the gate"));

        public void Release(int tokens) => _tokens.Release(tokens);

        /// <summary>Lets every token through from now on (the server can stop).</summary>
        public void Open()
        {
            _open = true;
            _tokens.Release(1000);
        }

        public void OnRequestStarted(GenerationHandle request, TimeSpan queued) { }
        public void OnFirstToken(GenerationHandle request, TimeSpan timeToFirstToken) { }
        public void OnPromptTokens(int count) { }
        public void OnRequestFinished(GenerationHandle request, FinishReason reason) { }
        public void OnStepFailed(Exception error) { }

        public void Dispose()
        {
            Open();
            _tokens.Dispose();
            _blocked.Dispose();
        }
    }

    /// <summary>
    /// A is held by the same gate as above (a 2000-token request once ran to its end before the status poll saw B
    /// queued behind it on a loaded machine), so B stays queued and C finds the queue full however slow the machine is.
    /// </summary>
    [Fact]
    public async Task FullQueue_Answers429WithRetryAfter_AndQueuedRequestStillGetsAnAnswer()
    {
        var gate = new TokenGate(free: 3);
        await using var server = await NodeServer.StartAsync(new Dictionary<string, string?>
        {
            ["Node:ModelPath"] = Models.TinyGpt2,
            ["Node:MaxBatch"] = "1",
            ["Node:MaxQueue"] = "1",
            ["Node:RetryAfter"] = "00:00:03",
        }, services => services.AddSingleton<ISchedulerObserver>(gate));
        using var opensBeforeTheServerStops = gate;

        // A occupies the only slot, held at the gate.
        using var ctsA = new CancellationTokenSource();
        var a = await server.Http.SendAsync(Sse.Post("v1/completions", Long()), HttpCompletionOption.ResponseHeadersRead, ctsA.Token);
        var readA = Sse.ReadAsync(a, ctsA.Token).GetAsyncEnumerator(ctsA.Token);
        Assert.True(await readA.MoveNextAsync());
        await gate.WaitUntilBlockedAsync();

        // B waits in the queue (a short request, so it finishes quickly once admitted).
        var b = server.Http.SendAsync(Sse.Post("v1/completions", new { model = NodeServer.ModelId, prompt = "b", max_tokens = 3, ignore_eos = true }));
        await WaitForStatusAsync(server.Http, s => (int)s["queue_depth"]! == 1);

        // C finds the queue full.
        using var c = await server.Http.SendAsync(Sse.Post("v1/completions", new { model = NodeServer.ModelId, prompt = "c", max_tokens = 3 }));
        var error = await RawHttpTests.AssertErrorAsync(c, HttpStatusCode.TooManyRequests, param: null);
        // One 429 for every limit, node or gateway (docs/errors.md): OpenAI's code, the limited resource as the type.
        Assert.Equal("rate_limit_exceeded", (string)error["code"]!);
        Assert.Equal("requests", (string)error["type"]!);
        Assert.Equal(TimeSpan.FromSeconds(3), c.Headers.RetryAfter!.Delta);

        // A full queue refuses before the body is read: a body that is not even JSON gets the 429, not a 400, so an
        // overloaded node spends nothing on parsing, templating or tokenizing what it refuses.
        using var garbage = await server.Http.PostAsync("v1/chat/completions", new StringContent("{not json", System.Text.Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.TooManyRequests, garbage.StatusCode);
        Assert.Equal(TimeSpan.FromSeconds(3), garbage.Headers.RetryAfter!.Delta);

        // Cancelling A lets B run: nothing is dropped.
        ctsA.Cancel();
        a.Dispose();
        await readA.DisposeAsync().AsTask().ContinueWith(_ => { });
        gate.Open();
        using var bResponse = await b;
        Assert.Equal(HttpStatusCode.OK, bResponse.StatusCode);
        var bJson = await Sse.JsonAsync(bResponse);
        Assert.Equal(3, (int)bJson["usage"]!["completion_tokens"]!);
    }
}
