using System.Net;
using Xunit;

namespace Serving.Inference.Node.Tests.Http;

/// <summary>The node serves a Llama-family checkpoint the same way (rotary, grouped-query attention).</summary>
public sealed class LlamaNodeTests
{
    [Fact]
    public async Task Chat_OnLlama_StreamedTextEqualsNonStreamed_AndBatchedEqualsSolo()
    {
        await using var server = await NodeServer.StartAsync(new Dictionary<string, string?> { ["Node:ModelPath"] = Models.TinyLlama, ["Node:MaxContext"] = "256" });
        object Body(int i, bool stream) => new
        {
            model = NodeServer.ModelId, messages = new[] { new { role = "user", content = $"Question {i}" } }, max_tokens = 24,
            temperature = 0.8, seed = 7 + i, ignore_eos = true, stream,
        };

        var solo = new string[4];
        for (var i = 0; i < 4; i++)
        {
            using var r = await server.Http.SendAsync(Sse.Post("v1/chat/completions", Body(i, stream: false)));
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            solo[i] = (string)(await Sse.JsonAsync(r))["choices"]![0]!["message"]!["content"]!;
        }

        var streamed = await Task.WhenAll(Enumerable.Range(0, 4).Select(async i =>
        {
            using var r = await server.Http.SendAsync(Sse.Post("v1/chat/completions", Body(i, stream: true)), HttpCompletionOption.ResponseHeadersRead);
            return Sse.Text(await Sse.ReadAllAsync(r));
        }));
        Assert.Equal(solo, streamed);
    }
}
