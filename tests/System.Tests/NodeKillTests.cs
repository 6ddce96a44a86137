using System.Collections.Concurrent;
using System.Net;
using Serving.System.Tests.Infrastructure;

namespace Serving.System.Tests;

/// <summary>kill -9 of a real node under streaming load, through the real gateway.</summary>
public sealed class NodeKillTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task KillNodeUnderLoad_NothingLostOrDuplicated_StreamsOnDeadNodeEndWithErrorEvent()
    {
        using var cluster = await Cluster.StartAsync();
        var (dead, survivor) = (cluster.Nodes[0], cluster.Nodes[1]);
        using var client = cluster.Client();
        const int Total = 36, Concurrency = 6; // long streams (384 tokens): the kill lands mid-stream even on a fast machine

        var outcomes = new ConcurrentDictionary<int, string>();
        var started = new ConcurrentDictionary<int, DateTime>();
        DateTime killedAt = DateTime.MaxValue;
        // Streams the dead node is running right now (first token received, not yet ended), told by X-Serving-Node:
        // the kill waits for one, so it always lands mid-stream however fast the machine decodes.
        int runningOnDead = 0;
        using var gate = new SemaphoreSlim(Concurrency);
        var killer = Task.Run(async () =>
        {
            var deadline = DateTime.UtcNow + Bound;
            while ((Cluster.ReceivedPosts(dead) < 2 || Volatile.Read(ref runningOnDead) < 1) && DateTime.UtcNow < deadline) await Task.Delay(1);
            killedAt = DateTime.UtcNow;
            dead.Kill();
        });
        var requests = Enumerable.Range(0, Total).Select(async i =>
        {
            await gate.WaitAsync();
            try
            {
                started[i] = DateTime.UtcNow;
                using var r = await client.SendAsync(Sse.Completion($"Request {i}:", 384, stream: true), HttpCompletionOption.ResponseHeadersRead).WaitAsync(Bound);
                if (r.StatusCode != HttpStatusCode.OK)
                {
                    outcomes[i] = "http:" + Sse.ErrorCode(await r.Content.ReadAsStringAsync());
                    return;
                }
                bool onDead = r.Headers.TryGetValues("X-Serving-Node", out var node) && node.Single() == "node-1";
                bool counted = false;
                try
                {
                    var events = await Sse.ReadEventsAsync(r, onFirstEvent: () =>
                    {
                        if (!onDead) return;
                        Interlocked.Increment(ref runningOnDead);
                        counted = true;
                    }).WaitAsync(Bound); // never a hang
                    outcomes[i] = events[^1] == "[DONE]" ? "done" : "event:" + Sse.ErrorCode(events[^1]);
                }
                finally
                {
                    if (counted) Interlocked.Decrement(ref runningOnDead);
                }
            }
            catch (HttpRequestException e)
            {
                outcomes[i] = "exception:" + e.Message;
            }
            finally
            {
                gate.Release();
            }
        }).ToList();
        await Task.WhenAll(requests);
        await killer;
        await Task.Delay(500); // the survivor's last request lines

        int n1 = Cluster.ReceivedPosts(dead), n2 = Cluster.ReceivedPosts(survivor);
        string summary = string.Join(", ", outcomes.GroupBy(o => o.Value).Select(g => $"{g.Key}={g.Count()}")) + $"; node-1 received {n1}, node-2 {n2}";
        output.WriteLine(summary);
        Assert.True(killedAt < DateTime.MaxValue, "the dead node never got load; " + summary);
        Assert.True(dead.HasExited);
        Assert.Equal(Total, outcomes.Count);
        // No request reached both nodes (a replayed generation would be counted twice) ...
        Assert.True(n1 + n2 <= Total, "more requests reached nodes than were sent (a replay); " + summary);
        var failed = outcomes.Where(o => o.Value != "done").ToList();
        // ... and the ones that reached no node all ended with a clear error.
        Assert.True(Total - (n1 + n2) <= failed.Count(f => f.Value == "http:upstream_error"), "a request reached no node yet did not fail; " + summary);
        // Only requests in flight on the dead node at the kill may fail: streams it was running end with the error event
        // (no [DONE]); a request written to it as it died is a 502.
        Assert.All(failed, f => Assert.Contains(f.Value, new[] { "event:upstream_disconnected", "http:upstream_error" }));
        Assert.True(failed.Count <= Concurrency, "more failures than requests in flight at the kill; " + summary);
        Assert.Contains(failed, f => f.Value == "event:upstream_disconnected");
        // Requests that started after the kill were all served by the survivor, including those first sent to the dead
        // node (connection refused before its heartbeat expired: retried).
        var after = started.Where(s => s.Value > killedAt.AddMilliseconds(100)).Select(s => s.Key).ToList();
        Assert.NotEmpty(after);
        Assert.All(after, i => Assert.Equal("done", outcomes[i]));
        // The gateway drops the dead node once Redis expired its heartbeat (Cluster.HeartbeatTtl) and a refresh saw it;
        // the bound only detects a node that never leaves.
        await cluster.WaitForNodesAsync(1, TimeSpan.FromSeconds(60));
    }
}
