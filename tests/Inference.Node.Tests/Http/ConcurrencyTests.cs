using System.Diagnostics;
using Xunit;

namespace Serving.Inference.Node.Tests.Http;

/// <summary>16 streaming clients at once: each gets exactly its solo output, and the streams interleave.</summary>
public sealed class ConcurrencyTests : IAsyncLifetime
{
    private NodeServer _server = null!;

    public async Task InitializeAsync() => _server = await NodeServer.StartAsync(new Dictionary<string, string?> { ["Node:ModelPath"] = Models.SlowGpt2 });

    public async Task DisposeAsync() => await _server.DisposeAsync();

    private const int Clients = 16;
    private const int Tokens = 200;

    private static object Request(int i) => new Dictionary<string, object?>
    {
        ["model"] = NodeServer.ModelId,
        ["prompt"] = $"Client {i} says" + new string('.', i % 5),
        ["max_tokens"] = Tokens,
        ["ignore_eos"] = true,
        ["stream"] = true,
        // Half greedy, half seeded sampling with penalties: batch composition must change neither.
        ["temperature"] = i % 2 == 0 ? 0 : 0.9,
        ["seed"] = 1000 + i,
        ["top_p"] = i % 4 == 1 ? 0.9 : 1.0,
        ["presence_penalty"] = i % 4 == 3 ? 0.5 : 0.0,
    };

    private async Task<(string Text, long First, long Last)> StreamAsync(int i)
    {
        using var response = await _server.Http.SendAsync(Sse.Post("v1/completions", Request(i)), HttpCompletionOption.ResponseHeadersRead);
        response.EnsureSuccessStatusCode();
        var events = await Sse.ReadAllAsync(response);
        Assert.Equal("[DONE]", events[^1].Data);
        var withText = events.Where(e => e.Data != "[DONE]" && e.Json["choices"]![0]!["finish_reason"] is null).ToList();
        return (Sse.Text(events), withText[0].ReceivedTicks, withText[^1].ReceivedTicks);
    }

    [Fact]
    public async Task SixteenStreamingClients_EachGetsItsSoloOutput_AndStreamsInterleave()
    {
        var solo = new string[Clients];
        for (var i = 0; i < Clients; i++) solo[i] = (await StreamAsync(i)).Text;

        var start = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var tasks = Enumerable.Range(0, Clients).Select(async i =>
        {
            await start.Task;
            return await StreamAsync(i);
        }).ToArray();
        start.SetResult();
        var results = await Task.WhenAll(tasks);

        for (var i = 0; i < Clients; i++) Assert.True(solo[i] == results[i].Text, $"client {i}: batched output differs from its solo run");

        // Interleaving: at the moment the first stream ended, most others had already received text.
        var firstEnd = results.Min(r => r.Last);
        var startedBefore = results.Count(r => r.First < firstEnd);
        Assert.True(startedBefore >= Clients / 2, $"only {startedBefore} of {Clients} streams had started when the first one finished");
    }
}
