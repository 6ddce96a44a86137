using System.Net;
using Xunit;

namespace Serving.Inference.Node.Tests.Http;

/// <summary>Graceful shutdown: a running stream is ended cleanly (finish chunk + [DONE]), never cut or left hanging.</summary>
public sealed class ShutdownTests
{
    [Fact]
    public async Task Stop_AfterTheDrainTime_EndsTheRunningStreamWithAbortAndDone()
    {
        await using var server = await NodeServer.StartAsync(new Dictionary<string, string?>
        {
            ["Node:ModelPath"] = Models.SlowGpt2,
            ["Node:ShutdownDrain"] = "00:00:00",
        });
        var body = new { model = NodeServer.ModelId, prompt = "long", max_tokens = 2000, ignore_eos = true, temperature = 0, stream = true };
        using var response = await server.Http.SendAsync(Sse.Post("v1/completions", body), HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        await using var reader = Sse.ReadAsync(response).GetAsyncEnumerator();
        Assert.True(await reader.MoveNextAsync());

        var stopping = server.StopAsync();
        var events = new List<SseEvent>();
        while (await reader.MoveNextAsync()) events.Add(reader.Current);
        await stopping.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal("[DONE]", events[^1].Data);
        var finish = events.Where(e => e.Data != "[DONE]").Select(e => e.Json["choices"]![0]!["finish_reason"]).Last(f => f is not null);
        Assert.Equal("abort", (string)finish!);
    }
}
