using System.Collections.ObjectModel;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using OpenTelemetry.Trace;
using Serilog.Core;
using Serilog.Events;
using Serving.Fixtures;
using Serving.ServiceDefaults.Logging;

namespace Serving.Standalone.Tests.Telemetry;

/// <summary>Items added from any thread; <see cref="WaitAsync"/> returns once a condition over them holds (no polling).</summary>
public sealed class Recorded<T>
{
    private readonly List<T> _items = [];
    private readonly Lock _gate = new();
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public void Add(T item)
    {
        TaskCompletionSource changed;
        lock (_gate)
        {
            _items.Add(item);
            changed = _changed;
            _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);
        }
        changed.TrySetResult();
    }

    public List<T> Snapshot()
    {
        lock (_gate) return [.. _items];
    }

    /// <summary>Until <paramref name="condition"/> holds over the items; a bound only against a hang (it fails the test, it does not pace it).</summary>
    public async Task<List<T>> WaitAsync(Func<List<T>, bool> condition, string what)
    {
        using var bound = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        while (true)
        {
            Task changed;
            List<T> items;
            lock (_gate)
            {
                items = [.. _items];
                changed = _changed.Task;
            }
            if (condition(items)) return items;
            try
            {
                await changed.WaitAsync(bound.Token);
            }
            catch (OperationCanceledException)
            {
                throw new TimeoutException($"never recorded: {what}");
            }
        }
    }
}

/// <summary>Spans an OpenTelemetry exporter receives (the in-memory exporter writes into this collection).</summary>
public sealed class SpanCollection : Collection<Activity>
{
    public Recorded<Activity> Spans { get; } = new();

    protected override void InsertItem(int index, Activity item)
    {
        base.InsertItem(index, item);
        Spans.Add(item);
    }
}

/// <summary>A Serilog sink in a host's container: the service defaults add every registered sink to the host's logger.</summary>
public sealed class CapturedLogs : ILogEventSink
{
    public Recorded<LogEvent> Events { get; } = new();

    public void Emit(LogEvent logEvent) => Events.Add(logEvent);
}

/// <summary>
/// The one-process system (embedded Garnet, a real node, the gateway, real HTTP on loopback between them) with an
/// in-memory span exporter added to each host's own tracer provider and a log sink in the node's container.
/// </summary>
public sealed class TracedSystemFixture : IAsyncLifetime
{
    private readonly string _model = Path.Combine(Path.GetTempPath(), "serving-standalone-tests-" + Environment.ProcessId, "traced");

    public StandaloneSystem System { get; private set; } = null!;

    public SpanCollection GatewaySpans { get; } = new();

    public SpanCollection NodeSpans { get; } = new();

    public CapturedLogs NodeLogs { get; } = new();

    public async Task InitializeAsync()
    {
        FixtureCheckpoint.Write(_model, FixtureShape.TinyGpt2);
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Standalone:ModelPath"] = _model,
            ["Standalone:Port"] = "0",
            ["Standalone:DevKey"] = "sk-traced-dev",
            ["Standalone:SeedPublicAdapters"] = "false",
            ["Standalone:SeedRewardHeads"] = "false",
            ["Node:Threads"] = "1",
            ["Node:ShutdownDrain"] = "00:00:00",
            ["Logging:LogLevel:Default"] = "Warning",
            ["Logging:LogLevel:Serving"] = "Information",
        }).Build();
        System = await StandaloneSystem.StartAsync(configuration,
            nodeServices: s =>
            {
                s.AddSingleton<ILogEventSink>(NodeLogs);
                s.ConfigureOpenTelemetryTracerProvider(t => t.AddInMemoryExporter(NodeSpans));
            },
            gatewayServices: s => s.ConfigureOpenTelemetryTracerProvider(t => t.AddInMemoryExporter(GatewaySpans)));
    }

    public async Task DisposeAsync()
    {
        await System.StopAsync();
        Directory.Delete(_model, recursive: true);
    }
}

/// <summary>
/// W3C trace context from a client through the gateway (YARP, HttpClient) into the node: the node's spans — its HTTP
/// server span and the request's queue-wait, prefill and decode spans — and its log records carry the client's trace,
/// under the gateway's span. Spans are read from each service's own tracer provider (what an OTLP exporter receives).
/// </summary>
public sealed class TraceContextTests(TracedSystemFixture fixture) : IClassFixture<TracedSystemFixture>
{
    private static readonly string[] Phases = ["serving.node.queue_wait", "serving.node.prefill", "serving.node.decode"];

    private async Task<string> ChatAsync(string? traceparent)
    {
        // This process traces HttpClient too (the services' providers listen to it): the client sends only the header
        // the test gives it, as an outside client would.
        using var client = new HttpClient(new SocketsHttpHandler { ActivityHeadersPropagator = null })
        {
            BaseAddress = new Uri(fixture.System.GatewayUrl),
            Timeout = TimeSpan.FromSeconds(60),
        };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "sk-traced-dev");
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent(JsonSerializer.Serialize(new
            {
                model = fixture.System.ModelId,
                messages = new[] { new { role = "user", content = "Tell me a fortune" } },
                max_tokens = 4,
                seed = 1,
            }), Encoding.UTF8, "application/json"),
        };
        if (traceparent is not null) request.Headers.Add("traceparent", traceparent);
        using var response = await client.SendAsync(request);
        string body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, body);
        // The request's id in the node's spans and log records is its X-Request-Id (the gateway's, forwarded).
        return Assert.Single(response.Headers.GetValues("x-request-id"));
    }

    private static int Port(string url) => new Uri(url).Port;

    private static bool IsServerSpanOf(Activity a, int port) =>
        a.Kind == ActivityKind.Server && a.GetTagItem("server.port") is int p && p == port;

    /// <summary>Whether the parent chain from the phase spans' parent walks, through spans of either service, up to the client's span.</summary>
    private static bool ChainResolves(List<Activity> nodeSpans, List<Activity> gatewaySpans, ActivityTraceId trace, ActivitySpanId clientSpan)
    {
        var byId = nodeSpans.Concat(gatewaySpans).Where(s => s.TraceId == trace).GroupBy(s => s.SpanId).ToDictionary(g => g.Key, g => g.First());
        var phase = nodeSpans.FirstOrDefault(s => s.TraceId == trace && s.OperationName == Phases[0]);
        if (phase is null) return false;
        for (var parent = phase.ParentSpanId; parent != clientSpan; parent = byId[parent].ParentSpanId)
        {
            if (!byId.ContainsKey(parent)) return false;
        }
        return true;
    }

    private static bool HasPhases(List<Activity> spans, ActivityTraceId trace) =>
        Phases.All(name => spans.Any(s => s.TraceId == trace && s.OperationName == name));

    [Fact]
    public async Task TraceParent_SentToTheGateway_NodeSpansAndLogRecordsCarryIt_UnderTheGatewaySpan()
    {
        var trace = ActivityTraceId.CreateFromString(Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16)));
        var clientSpan = ActivitySpanId.CreateFromString(Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8)));
        string requestId = await ChatAsync($"00-{trace.ToHexString()}-{clientSpan.ToHexString()}-01");

        // The node's own tracer provider exported the three phase spans of the request, in the client's trace, and its
        // server span (exported when it stops, which may be after the client has the response: waited for, not assumed).
        int nodePort = Port(fixture.System.NodeUrl), gatewayPort = Port(fixture.System.GatewayUrl);
        var nodeSpans = await fixture.NodeSpans.Spans.WaitAsync(
            s => HasPhases(s, trace) && s.Any(a => a.TraceId == trace && IsServerSpanOf(a, nodePort)), "the node's phase spans and server span");
        // The gateway's spans stop as the response drains too: wait until the parent chain from the node's server span
        // resolves through them (or reaches a span neither service exported — the assertions below say which).
        var gatewaySpans = await fixture.GatewaySpans.Spans.WaitAsync(
            s => s.Any(a => a.TraceId == trace && IsServerSpanOf(a, gatewayPort)) && ChainResolves(nodeSpans, s, trace, clientSpan),
            "the gateway's server span and every span between it and the node's");
        var phases = Phases.Select(name => nodeSpans.Single(s => s.TraceId == trace && s.OperationName == name)).ToList();
        Assert.All(phases, p => Assert.Equal(requestId, p.GetTagItem("serving.request_id")));
        Assert.All(phases, p => Assert.True(p.Recorded));
        // In order, back to back: queue wait ends where prefill starts, prefill where decode starts.
        Assert.Equal(phases[0].StartTimeUtc + phases[0].Duration, phases[1].StartTimeUtc);
        Assert.Equal(phases[1].StartTimeUtc + phases[1].Duration, phases[2].StartTimeUtc);
        Assert.True(phases[2].GetTagItem("serving.completion_tokens") is int tokens && tokens is > 0 and <= 4);

        // Parent chain: phase → the node's server span → … (the gateway's forward: client span) → the gateway's server
        // span → the client's span.
        var byId = nodeSpans.Concat(gatewaySpans).Where(s => s.TraceId == trace)
            .GroupBy(s => s.SpanId).ToDictionary(g => g.Key, g => g.First());
        var parents = phases.Select(p => p.ParentSpanId).Distinct().ToList();
        Assert.Single(parents);
        var nodeServer = byId[parents[0]];
        Assert.True(IsServerSpanOf(nodeServer, nodePort), $"the phases' parent is {nodeServer.Source.Name}/{nodeServer.OperationName}, not the node's server span");
        var chain = new List<Activity>();
        for (var span = nodeServer; ; span = byId[span.ParentSpanId])
        {
            chain.Add(span);
            if (span.ParentSpanId == clientSpan || !byId.ContainsKey(span.ParentSpanId)) break;
        }
        var top = chain[^1];
        Assert.True(top.ParentSpanId == clientSpan, $"chain {string.Join(" → ", chain.Select(c => c.OperationName))} does not reach the client's span");
        Assert.True(IsServerSpanOf(top, gatewayPort), "the span under the client's is not the gateway's server span");
        Assert.Contains(chain, c => c.Kind == ActivityKind.Client && c.Source.Name == "System.Net.Http");

        // The node's log records of the request (written on the scheduler thread) carry the client's trace id.
        var logs = await fixture.NodeLogs.Events.WaitAsync(
            e => e.Count(l => l.TraceId == trace && Mentions(l, requestId)) >= 2, "the node's request log records");
        var records = logs.Where(l => l.TraceId == trace && Mentions(l, requestId)).ToList();
        Assert.Contains(records, r => r.MessageTemplate.Text.Contains("started", StringComparison.Ordinal));
        Assert.Contains(records, r => r.MessageTemplate.Text.Contains("finished", StringComparison.Ordinal));
        Assert.All(records, r => Assert.Contains(r.SpanId!.Value, phases.Select(p => p.SpanId)));
    }

    [Fact]
    public async Task NoTraceParent_GatewayStartsATrace_TheNodeContinuesIt()
    {
        string requestId = await ChatAsync(traceparent: null);

        var nodeSpans = await fixture.NodeSpans.Spans.WaitAsync(
            s => s.Any(a => a.OperationName == "serving.node.decode" && Equals(a.GetTagItem("serving.request_id"), requestId)), "the node's decode span");
        var trace = nodeSpans.Single(a => a.OperationName == "serving.node.decode" && Equals(a.GetTagItem("serving.request_id"), requestId)).TraceId;
        Assert.NotEqual(default, trace);
        Assert.True(HasPhases(nodeSpans, trace));
        int gatewayPort = Port(fixture.System.GatewayUrl);
        var gatewaySpans = await fixture.GatewaySpans.Spans.WaitAsync(
            s => s.Any(a => a.TraceId == trace && IsServerSpanOf(a, gatewayPort)), "the gateway's server span in the node's trace");
        // The gateway's server span is the trace's root: the trace began at the gateway, and only this request is in it.
        var root = gatewaySpans.Single(a => a.TraceId == trace && IsServerSpanOf(a, gatewayPort));
        Assert.Equal(default, root.ParentSpanId);
        Assert.Single(nodeSpans, a => a.TraceId == trace && a.OperationName == "serving.node.decode");
        var logs = await fixture.NodeLogs.Events.WaitAsync(e => e.Any(l => Mentions(l, requestId) && l.TraceId == trace), "a node log record in the trace");
        Assert.All(logs.Where(l => Mentions(l, requestId)), l => Assert.Equal(trace, l.TraceId));
    }

    [Fact]
    public async Task JsonLogFormat_NodeRecords_OneParseableLineEachWithTraceAndSpanIds()
    {
        var trace = ActivityTraceId.CreateRandom();
        string requestId = await ChatAsync($"00-{trace.ToHexString()}-{ActivitySpanId.CreateRandom().ToHexString()}-01");
        var logs = await fixture.NodeLogs.Events.WaitAsync(e => e.Count(l => Mentions(l, requestId)) >= 2, "the node's request log records");

        // The formatter the service defaults write to the console for Logging:Format=json (case as an operator types it).
        var options = ServiceLogging.Read(new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?> { ["Logging:Format"] = "json" }).Build());
        Assert.Equal(LogFormat.Json, options.Format);
        var formatter = ServiceLogging.Formatter(options.Format);
        var output = new StringWriter();
        foreach (var record in logs.Where(l => Mentions(l, requestId))) formatter.Format(record, output);
        var lines = output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(logs.Count(l => Mentions(l, requestId)), lines.Length);
        foreach (var line in lines)
        {
            using var doc = JsonDocument.Parse(line);
            var root = doc.RootElement;
            Assert.Equal(trace.ToHexString(), root.GetProperty("@tr").GetString());
            Assert.Equal(16, root.GetProperty("@sp").GetString()!.Length);
            Assert.Contains(requestId, root.GetProperty("@m").GetString(), StringComparison.Ordinal);
            Assert.Equal(requestId, root.GetProperty("RequestId").GetString());
            Assert.True(DateTimeOffset.TryParse(root.GetProperty("@t").GetString(), out _));
        }

        // And the text format is not JSON: the setting chooses.
        var text = new StringWriter();
        ServiceLogging.Formatter(LogFormat.Text).Format(logs.First(l => Mentions(l, requestId)), text);
        Assert.False(text.ToString().TrimStart().StartsWith('{'));
    }

    private static bool Mentions(LogEvent e, string requestId) =>
        e.Properties.TryGetValue("RequestId", out var v) && v is ScalarValue { Value: string s } && s == requestId;
}
