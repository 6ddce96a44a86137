using System.Net;
using System.Text;
using Xunit;

namespace Serving.Inference.Node.Tests.Http;

/// <summary>
/// The node's logs at the default level (Information) never carry prompt or output text: a full request cycle
/// (completion, chat, a stream, a refusal) runs with the node's console sink captured, and the capture is scanned.
/// </summary>
[Collection(ConsoleCapture.Name)]
public sealed class LogPrivacyTests
{
    [Fact]
    public async Task RequestCycle_AtInformation_LogsNeverHoldPromptText()
    {
        const string secret = "PROMPT-SECRET-5e1d";
        var captured = new StringWriter();
        var original = Console.Out;
        // Captured before the node starts: its console sink may take the writer when it is built.
        Console.SetOut(TextWriter.Synchronized(captured));
        try
        {
            await using var server = await NodeServer.StartAsync(new Dictionary<string, string?>
            {
                ["Logging:LogLevel:Default"] = "Information", ["Logging:Format"] = "Json",
            });
            var http = server.Http;
            using (var r = await http.SendAsync(Sse.Post("v1/completions", new { model = NodeServer.ModelId, prompt = secret, max_tokens = 4 })))
                Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            using (var r = await http.SendAsync(Sse.Post("v1/chat/completions", new { model = NodeServer.ModelId, messages = new[] { new { role = "user", content = secret } }, max_tokens = 4, stream = true })))
                await r.Content.ReadAsStringAsync();
            using (var r = await http.SendAsync(Sse.Post("v1/completions", new { model = NodeServer.ModelId, prompt = secret, max_tokens = 4, temperature = -1 })))
                Assert.Equal(HttpStatusCode.BadRequest, r.StatusCode);
            using (var r = await http.PostAsync("v1/completions", new StringContent("{\"model\":\"tiny\",\"prompt\":\"" + secret + "\",", Encoding.UTF8, "application/json")))
                Assert.Equal(HttpStatusCode.BadRequest, r.StatusCode);
        }
        finally
        {
            Console.SetOut(original);
        }
        var logs = captured.ToString();
        Assert.Contains("\"@m\"", logs); // the node did log (compact JSON) during the cycle
        Assert.DoesNotContain(secret, logs);
    }
}

/// <summary>Tests that redirect the process's console run one at a time.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ConsoleCapture
{
    public const string Name = "console capture";
}
