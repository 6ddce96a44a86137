using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Serilog.Core;
using Serilog.Events;
using Xunit;

namespace Serving.Inference.Node.Tests.Http;

/// <summary>
/// The node's log records of a generation request carry its <c>X-Request-Id</c> (the client's own, or the one the
/// node gave it) as <c>RequestId</c>: those written on the HTTP thread (inside the request's log scope) and those the
/// scheduler writes on its own thread (request started / finished), where no HTTP scope reaches. The events are read
/// from a Serilog sink registered in the node's container, as the service defaults wire every registered sink.
/// </summary>
public sealed class RequestIdLogTests
{
    [Fact]
    public async Task SchedulerRecords_ChatAndStreamedCompletion_CarryTheRequestsXRequestId()
    {
        var sink = new CapturedEvents();
        await using var server = await NodeServer.StartAsync(
            new Dictionary<string, string?> { ["Logging:LogLevel:Default"] = "Information" },
            services => services.AddSingleton<ILogEventSink>(sink));

        // The client's own id, on a chat completion.
        using var chat = Sse.Post("v1/chat/completions", new { model = NodeServer.ModelId, messages = new[] { new { role = "user", content = "hi" } }, max_tokens = 3 });
        chat.Headers.Add("X-Request-Id", "client-req-7f3a");
        using var chatResponse = await server.Http.SendAsync(chat);
        Assert.Equal(HttpStatusCode.OK, chatResponse.StatusCode);
        Assert.Equal("client-req-7f3a", Assert.Single(chatResponse.Headers.GetValues("x-request-id")));
        var completionId = (string)(await Sse.JsonAsync(chatResponse))["id"]!;

        // No id from the client, a streamed completion: the node's own req_… id.
        using var stream = await server.Http.SendAsync(Sse.Post("v1/completions", new { model = NodeServer.ModelId, prompt = "hello", max_tokens = 3, stream = true }));
        Assert.Equal(HttpStatusCode.OK, stream.StatusCode);
        var generated = Assert.Single(stream.Headers.GetValues("x-request-id"));
        Assert.StartsWith("req_", generated);
        await Sse.ReadAllAsync(stream);

        var events = await sink.WaitAsync(e => e.Count(IsFinished) >= 2, "both requests' 'finished' records");
        var scheduler = events.Where(e => IsStarted(e) || IsFinished(e)).ToList();
        Assert.Equal(4, scheduler.Count);
        // Each request's two scheduler records carry its X-Request-Id, and the text names it.
        foreach (var id in new[] { "client-req-7f3a", generated })
        {
            var mine = scheduler.Where(e => RequestId(e) == id).ToList();
            Assert.Equal(2, mine.Count);
            Assert.All(mine, e => Assert.Contains(id, e.RenderMessage(), StringComparison.Ordinal));
        }
        // Not the response's completion id: one id per request across the client, the gateway and the node.
        Assert.DoesNotContain(events, e => RequestId(e) == completionId);
    }

    private static bool IsStarted(LogEvent e) => e.MessageTemplate.Text.StartsWith("Request {RequestId} started", StringComparison.Ordinal);

    private static bool IsFinished(LogEvent e) => e.MessageTemplate.Text.StartsWith("Request {RequestId} finished", StringComparison.Ordinal);

    private static string? RequestId(LogEvent e) =>
        e.Properties.TryGetValue("RequestId", out var v) && v is ScalarValue { Value: string s } ? s : null;

    /// <summary>Events from any thread; <see cref="WaitAsync"/> returns once a condition over them holds (no polling, no sleeps).</summary>
    private sealed class CapturedEvents : ILogEventSink
    {
        private readonly List<LogEvent> _events = [];
        private readonly Lock _gate = new();
        private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Emit(LogEvent logEvent)
        {
            TaskCompletionSource changed;
            lock (_gate)
            {
                _events.Add(logEvent);
                changed = _changed;
                _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);
            }
            changed.TrySetResult();
        }

        /// <summary>Until <paramref name="condition"/> holds; the bound only stops a hang (it fails the test, it does not pace it).</summary>
        public async Task<List<LogEvent>> WaitAsync(Func<List<LogEvent>, bool> condition, string what)
        {
            using var bound = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            while (true)
            {
                Task changed;
                List<LogEvent> events;
                lock (_gate)
                {
                    events = [.. _events];
                    changed = _changed.Task;
                }
                if (condition(events)) return events;
                try
                {
                    await changed.WaitAsync(bound.Token);
                }
                catch (OperationCanceledException)
                {
                    throw new TimeoutException($"never logged: {what}");
                }
            }
        }
    }
}
