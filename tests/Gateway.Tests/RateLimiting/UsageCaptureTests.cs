using System.Text;
using Serving.Gateway.RateLimiting;

namespace Serving.Gateway.Tests.RateLimiting;

/// <summary>
/// The response as the client sees it and the usage the gateway reads from it: JSON bodies unchanged, stream chunks
/// rewritten to the usage the client asked for, whatever the write boundaries.
/// </summary>
public sealed class UsageCaptureTests
{
    private const string Stream =
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"text\":\"say \\\"usage\\\":{\\\"prompt_tokens\\\":1}\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"total_tokens\":6,\"generated_tokens\":1}}\n\n"
        + "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"text\":\"b\"}], \"usage\" : {\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7,\"generated_tokens\":2} , \"x\":1}\n\n"
        + "data: {\"id\":\"c\",\"choices\":[],\"alignment\":{\"method\":\"best_of_n\"}}\n\n"
        + "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7,\"generated_tokens\":9}}\n\n"
        + "data: [DONE]\n\n";

    private static async Task<(string Text, UsageCapture Capture)> RunAsync(string body, bool sse, ClientUsage client, int cut)
    {
        var sink = new MemoryStream();
        var capture = new UsageCapture(sink, () => sse, client);
        var bytes = Encoding.UTF8.GetBytes(body);
        for (int at = 0; at < bytes.Length; at += cut) await capture.WriteAsync(bytes.AsMemory(at, Math.Min(cut, bytes.Length - at)));
        await capture.CompleteAsync(CancellationToken.None);
        return (Encoding.UTF8.GetString(sink.ToArray()), capture);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(100000)]
    public async Task Stream_ClientAskedNothing_UsageRemovedAndUsageChunkDropped(int cut)
    {
        var (text, capture) = await RunAsync(Stream, sse: true, ClientUsage.None, cut);
        Assert.Equal(
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"text\":\"say \\\"usage\\\":{\\\"prompt_tokens\\\":1}\"}]}\n\n"
            + "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"text\":\"b\"}] , \"x\":1}\n\n"
            + "data: {\"id\":\"c\",\"choices\":[],\"alignment\":{\"method\":\"best_of_n\"}}\n\n"
            + "data: [DONE]\n\n", text);
        Assert.Equal(new UsageReport(5, 2, 9), capture.Final);
        Assert.Equal(new UsageReport(5, 2, 2), capture.Progress);
        Assert.True(capture.SawChoices);
    }

    [Fact]
    public async Task Stream_ClientAskedIncludeUsage_NullInChunksAndTheUsageChunkKept()
    {
        var (text, capture) = await RunAsync(Stream, sse: true, ClientUsage.Final, 3);
        Assert.Equal(
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"text\":\"say \\\"usage\\\":{\\\"prompt_tokens\\\":1}\"}],\"usage\":null}\n\n"
            + "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"text\":\"b\"}], \"usage\" : null , \"x\":1}\n\n"
            + "data: {\"id\":\"c\",\"choices\":[],\"alignment\":{\"method\":\"best_of_n\"}}\n\n"
            + "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7,\"generated_tokens\":9}}\n\n"
            + "data: [DONE]\n\n", text);
        Assert.Equal(14, capture.Final!.Value.Charge);
    }

    [Fact]
    public async Task Stream_ClientAskedContinuous_Unchanged()
    {
        var (text, _) = await RunAsync(Stream, sse: true, ClientUsage.Continuous, 5);
        Assert.Equal(Stream, text);
    }

    [Fact]
    public async Task Stream_CutShort_ProgressIsTheLastChunkAndTheTailPasses()
    {
        var cutShort = Stream[..Stream.IndexOf("data: {\"id\":\"c\",\"choices\":[]", StringComparison.Ordinal)] + "data: {\"error\":{\"message\":\"node died";
        var (text, capture) = await RunAsync(cutShort, sse: true, ClientUsage.None, 11);
        Assert.Null(capture.Final);
        Assert.Equal(new UsageReport(5, 2, 2), capture.Progress);
        Assert.EndsWith("data: {\"error\":{\"message\":\"node died", text);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(1000)]
    public async Task Json_PassesUnchanged_UsageReadFromTheTopLevelOnly(int cut)
    {
        var json = """{"choices":[{"message":{"content":"\"usage\":{\"prompt_tokens\":999,\"completion_tokens\":1}"},"logprobs":{"top_logprobs":[{"prompt_tokens":0}]}}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}""";
        var (text, capture) = await RunAsync(json, sse: false, ClientUsage.None, cut);
        Assert.Equal(json, text);
        Assert.Equal(new UsageReport(3, 4, 4), capture.Final); // no generated_tokens: the completion tokens
        Assert.False(capture.IsStream);
    }

    [Fact]
    public async Task Json_WithoutUsage_NoneRead()
    {
        var (_, capture) = await RunAsync("""{"error":{"message":"no"}}""", sse: false, ClientUsage.None, 4);
        Assert.Null(capture.Final);
    }
}
