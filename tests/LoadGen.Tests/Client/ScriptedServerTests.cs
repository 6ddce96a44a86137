using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Serving.LoadGen.Client;
using Serving.LoadGen.Metrics;
using Serving.LoadGen.Tests.Support;
using Serving.LoadGen.Workload;
using Xunit;

namespace Serving.LoadGen.Tests.Client;

/// <summary>
/// The client against a real Kestrel server on loopback that emits tokens with known delays. Measured
/// latencies must be at least the scripted delay (less 5 ms of timer slack); the tight comparison is against what
/// the server itself recorded for the same requests (same clock), never against a guess of how late a loaded
/// machine runs the script's delays.
/// </summary>
public sealed class ScriptedServerTests
{
    private static TraceRequest Req(int id, string? adapter = "adapter-0", int output = 10, double arrival = 0) =>
        new(id, arrival, adapter, 4, output, "the of and to");

    private static IReadOnlyList<TraceRequest> Reqs(int n, int output = 10) => Enumerable.Range(0, n).Select(i => Req(i, output: output)).ToArray();

    private static ClientOptions Options(ScriptedOpenAiServer server, bool stream = true) =>
        new() { BaseUrl = server.BaseUrl, Stream = stream, Timeout = TimeSpan.FromSeconds(20) };

    private static async Task<RunOutcome> RunAsync(ClientOptions options, RunPlan plan, CancellationToken ct = default)
    {
        using var client = new OpenAiLoadClient(options);
        return await new LoadRunner(client).RunAsync(plan, null, ct);
    }

    [Fact]
    public async Task Streaming_KnownDelays_TtftItlTpotE2eAndThroughputAgreeWithScript()
    {
        // Wall-clock measurement on a shared machine: a load spike can delay the client's reads in one run,
        // so up to three runs are made and the first that agrees passes. A wrong formula fails all three.
        var failures = new List<string>();
        for (int attempt = 0; attempt < 3; attempt++)
        {
            string? failure = await MeasureKnownDelaysAsync();
            if (failure is null)
            {
                return;
            }

            failures.Add(failure);
        }

        Assert.Fail(string.Join(Environment.NewLine, failures));
    }

    /// <summary>One measurement; returns why it disagrees with the script, or null.</summary>
    private static async Task<string?> MeasureKnownDelaysAsync()
    {
        await using var server = await ScriptedOpenAiServer.StartAsync(new Script { TtftMs = 200, ItlMs = 50, Tokens = 10 });
        var plan = new RunPlan { Requests = Reqs(8), Mode = LoadMode.ClosedLoop, Concurrency = 4 };

        RunOutcome outcome = await RunAsync(Options(server), plan);
        RunMetrics m = MetricsCalculator.Compute(outcome.Records, outcome.DurationSeconds);

        // Exact: every request completed with 10 chunks and usage; 9 gaps each.
        Assert.Equal(8, m.Completed);
        Assert.All(outcome.Records, r => Assert.True(r.UsageReported && r.OutputTokens == 10 && r.ChunkSeconds.Count == 10));
        Assert.Equal(9 * 8, m.ItlMs.Count);
        Assert.Equal(8 / m.DurationSeconds, m.RequestThroughput, 9);
        Assert.Equal(80 / m.DurationSeconds, m.OutputTokenThroughput, 9);

        // Server-side truth for the same requests (same clock): what the script really did, delays included.
        var seen = server.Observations.ToDictionary(o => o.RequestId);
        Observation[] obs = outcome.Records.Select(r => seen[$"loadgen-{r.Id}"]).ToArray();
        double serverTtft = obs.Average(o => Observation.Ms(o.ReceivedTs, o.ChunkTs[0]));
        double serverItl = obs.Average(o => Observation.Ms(o.ChunkTs[0], o.ChunkTs[^1]) / 9);
        double serverSpan = Observation.Ms(server.Observations.Min(o => o.ReceivedTs), server.Observations.Max(o => o.DoneTs)) / 1000;

        double serverE2e = obs.Average(o => Observation.Ms(o.ReceivedTs, o.DoneTs));
        var checks = new (string Name, double Value, double Min, double Max)[]
        {
            // Against the script: TTFT 200 ms, ITL = TPOT = 50 ms, E2E = 200 + 9·50 = 650 ms; never below (5 ms timer
            // slack). No upper bound against the script: on a loaded machine the server's own delays run long.
            ("TTFT mean", m.TtftMs.Mean, 195, double.PositiveInfinity),
            ("ITL mean", m.ItlMs.Mean, 45, double.PositiveInfinity),
            ("TPOT mean", m.TpotMs.Mean, 45, double.PositiveInfinity),
            ("E2E mean", m.E2eMs.Mean, 645, double.PositiveInfinity),
            // Against the server's own timestamps of the same requests (same clock, so load moves both): TTFT and E2E
            // within 30 ms, ITL and TPOT within 5 ms, throughput within 10%. A wrong formula misses these by far more.
            ("TTFT - server TTFT", m.TtftMs.Mean - serverTtft, -2, 30),
            ("E2E - server E2E", m.E2eMs.Mean - serverE2e, -2, 30),
            ("ITL - server ITL", m.ItlMs.Mean - serverItl, -5, 5),
            ("TPOT - server ITL", m.TpotMs.Mean - serverItl, -5, 5),
            ("out tok/s ÷ server", m.OutputTokenThroughput / (80 / serverSpan), 0.9, 1.1),
        };

        string[] bad = checks.Where(c => c.Value < c.Min || c.Value > c.Max).Select(c => $"{c.Name} = {c.Value:F2} not in [{c.Min}, {c.Max}]").ToArray();
        return bad.Length == 0 ? null : string.Join("; ", bad);
    }

    [Fact]
    public async Task NonStreaming_E2eCoversWholeResponseAndTokensFromUsage()
    {
        await using var server = await ScriptedOpenAiServer.StartAsync(new Script { TtftMs = 200, ItlMs = 50, Tokens = 10 });

        RunOutcome outcome = await RunAsync(Options(server, stream: false), new RunPlan { Requests = Reqs(2) });
        RunMetrics m = MetricsCalculator.Compute(outcome.Records, outcome.DurationSeconds);

        Assert.Equal(2, m.Completed);
        Assert.Equal(0, m.TtftMs.Count);
        Assert.Equal(0, m.ItlMs.Count);
        // Never below the script (the whole body came after 200 + 9·50 ms); above, only against the server's own
        // timestamps of the same requests (same clock, so load moves both): a formula that counted a response twice would
        // read at least twice the server's time; a loaded machine adds only the client's read of one small body.
        Assert.True(m.E2eMs.Min >= 645, $"E2E min {m.E2eMs.Min:F1} ms is shorter than the scripted 650 ms");
        double serverE2e = server.Observations.Average(o => Observation.Ms(o.ReceivedTs, o.DoneTs));
        Assert.InRange(m.E2eMs.Mean - serverE2e, -2, serverE2e);
        Assert.Equal(20, m.TotalOutputTokens);
        Assert.All(server.Observations, o => Assert.False(o.Body.GetProperty("stream").GetBoolean()));
    }

    [Theory]
    [InlineData(ApiEndpoint.Chat)]
    [InlineData(ApiEndpoint.Completions)]
    public async Task Streaming_NoUsage_CountsContentChunks(ApiEndpoint endpoint)
    {
        await using var server = await ScriptedOpenAiServer.StartAsync(new Script { TtftMs = 5, ItlMs = 5, Tokens = null, SendUsage = false });

        RunOutcome outcome = await RunAsync(Options(server) with { Endpoint = endpoint }, new RunPlan { Requests = [Req(0, output: 7)] });

        RequestRecord r = Assert.Single(outcome.Records);
        Assert.Null(r.Error);
        Assert.False(r.UsageReported);
        Assert.Equal(7, r.OutputTokens);
        Assert.Equal(endpoint == ApiEndpoint.Chat ? "/v1/chat/completions" : "/v1/completions", Assert.Single(server.Observations).Path);
    }

    [Fact]
    public async Task Request_BodyAndHeaders_FollowOpenAiConventions()
    {
        await using var server = await ScriptedOpenAiServer.StartAsync(new Script { TtftMs = 1, ItlMs = 1, Tokens = 2 });
        ClientOptions options = Options(server) with { BaseModel = "gpt2", ApiKey = "sekrit", IgnoreEos = true };

        await RunAsync(options, new RunPlan { Requests = [Req(3, "math", output: 17), Req(4, adapter: null)] });

        var seen = server.Observations.OrderBy(o => o.RequestId, StringComparer.Ordinal).ToArray();
        Assert.Equal("gpt2:math", seen[0].Body.GetProperty("model").GetString());
        Assert.Equal("gpt2", seen[1].Body.GetProperty("model").GetString());
        Assert.Equal(17, seen[0].Body.GetProperty("max_tokens").GetInt32());
        Assert.True(seen[0].Body.GetProperty("stream_options").GetProperty("include_usage").GetBoolean());
        Assert.True(seen[0].Body.GetProperty("ignore_eos").GetBoolean());
        Assert.Equal("the of and to", seen[0].Body.GetProperty("messages")[0].GetProperty("content").GetString());
        Assert.All(seen, o => Assert.Equal("Bearer sekrit", o.Authorization));
        Assert.Equal("adapter-as-model", new ClientOptions { AdapterAsModel = true }.ModelFor("adapter-as-model"));
    }

    [Fact]
    public async Task Http2_H2cPriorKnowledge_Succeeds()
    {
        await using var server = await ScriptedOpenAiServer.StartAsync(new Script { TtftMs = 5, ItlMs = 5, Tokens = 3 }, HttpProtocols.Http2);

        RunOutcome outcome = await RunAsync(Options(server) with { HttpVersion = HttpVersion.Version20 }, new RunPlan { Requests = Reqs(3), Mode = LoadMode.ClosedLoop, Concurrency = 3 });

        Assert.All(outcome.Records, r => Assert.Null(r.Error));
        Assert.All(server.Observations, o => Assert.Equal("HTTP/2", o.Protocol));
    }

    [Fact]
    public async Task HttpErrors_CountedByStatusKind()
    {
        await using var server = await ScriptedOpenAiServer.StartAsync(body =>
            body.GetProperty("model").GetString() switch
            {
                "base:e429" => new Script { Status = 429 },
                "base:e500" => new Script { Status = 500 },
                _ => new Script { TtftMs = 2, ItlMs = 2, Tokens = 2 },
            });
        var trace = TraceGenerator.Generate(new WorkloadSpec
        {
            Seed = 3,
            Count = 30,
            Adapters = new AdapterPopularitySpec { Kind = AdapterPopularityKind.List, Names = ["ok", "e429", "e500"] },
            PromptLength = new LengthRange(2, 4),
            OutputLength = new LengthRange(2, 3),
        });

        RunOutcome outcome = await RunAsync(Options(server), new RunPlan { Requests = trace, Mode = LoadMode.ClosedLoop, Concurrency = 4 });
        RunMetrics m = MetricsCalculator.Compute(outcome.Records, outcome.DurationSeconds);

        int n429 = trace.Count(r => r.Adapter == "e429"), n500 = trace.Count(r => r.Adapter == "e500");
        Assert.True(n429 > 0 && n500 > 0);
        Assert.Equal(new Dictionary<string, int> { ["http_429"] = n429, ["http_500"] = n500 }, m.Errors);
        Assert.Equal(30 - n429 - n500, m.Completed);
        Assert.Contains("scripted failure", outcome.Records.First(r => r.Error == "http_429").ErrorDetail, StringComparison.Ordinal);
        Assert.Equal(n429, m.PerAdapter.Single(a => a.Adapter == "e429").Failed);
    }

    [Fact]
    public async Task Refusals_RetryAfterRecorded_AndThoseWithoutOneCounted()
    {
        await using var server = await ScriptedOpenAiServer.StartAsync(body =>
            body.GetProperty("model").GetString() switch
            {
                "base:with" => new Script { Status = 429, RetryAfter = "3" },
                "base:without" => new Script { Status = 503 },
                _ => new Script { TtftMs = 2, ItlMs = 2, Tokens = 2 },
            });
        var trace = TraceGenerator.Generate(new WorkloadSpec
        {
            Seed = 5,
            Count = 30,
            Adapters = new AdapterPopularitySpec { Kind = AdapterPopularityKind.List, Names = ["ok", "with", "without"] },
            PromptLength = new LengthRange(2, 4),
            OutputLength = new LengthRange(2, 3),
        });

        RunOutcome outcome = await RunAsync(Options(server), new RunPlan { Requests = trace, Mode = LoadMode.ClosedLoop, Concurrency = 4 });
        RunMetrics m = MetricsCalculator.Compute(outcome.Records, outcome.DurationSeconds);

        int with = trace.Count(r => r.Adapter == "with"), without = trace.Count(r => r.Adapter == "without");
        Assert.True(with > 0 && without > 0);
        Assert.All(outcome.Records.Where(r => r.Adapter == "with"), r => Assert.Equal("3", r.RetryAfter));
        Assert.All(outcome.Records.Where(r => r.Adapter != "with"), r => Assert.Null(r.RetryAfter));
        Assert.Equal(with + without, m.Refused);
        Assert.Equal(without, m.RefusedWithoutRetryAfter);
    }

    [Fact]
    public async Task SlowServer_PerRequestTimeout_RecordedAsTimeoutAndBounded()
    {
        await using var server = await ScriptedOpenAiServer.StartAsync(new Script { TtftMs = 10_000 });
        var stopwatch = Stopwatch.StartNew();

        RunOutcome outcome = await RunAsync(Options(server) with { Timeout = TimeSpan.FromMilliseconds(300) }, new RunPlan { Requests = Reqs(2) });

        Assert.All(outcome.Records, r => Assert.Equal(ErrorKinds.Timeout, r.Error));
        Assert.All(outcome.Records, r => Assert.InRange(r.E2eSeconds, 0.29, 5));
        Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(8), "the run must end by the per-request timeout, not the server");
        Assert.Equal(2, MetricsCalculator.Compute(outcome.Records).Errors[ErrorKinds.Timeout]);
    }

    [Theory]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public async Task BrokenStream_RecordedAsMalformed(bool malformedJson, bool omitDone)
    {
        await using var server = await ScriptedOpenAiServer.StartAsync(new Script { TtftMs = 2, ItlMs = 2, Tokens = 3, Malformed = malformedJson, OmitDone = omitDone });

        RunOutcome outcome = await RunAsync(Options(server), new RunPlan { Requests = Reqs(1) });

        Assert.Equal(ErrorKinds.MalformedStream, Assert.Single(outcome.Records).Error);
    }

    [Fact]
    public async Task NothingListening_RecordedAsConnectionError()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        var options = new ClientOptions { BaseUrl = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(5) };

        RunOutcome outcome = await RunAsync(options, new RunPlan { Requests = Reqs(1) });

        Assert.Equal(ErrorKinds.Connection, Assert.Single(outcome.Records).Error);
    }

    [Fact]
    public async Task Cancellation_StopsPromptlyAndKeepsWhatWasMeasured()
    {
        await using var server = await ScriptedOpenAiServer.StartAsync(new Script { TtftMs = 100, ItlMs = 100, Tokens = 5 });
        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(1200));
        var stopwatch = Stopwatch.StartNew();

        RunOutcome outcome = await RunAsync(Options(server), new RunPlan { Requests = Reqs(50), Mode = LoadMode.ClosedLoop, Concurrency = 2 }, cts.Token);

        Assert.True(outcome.Interrupted);
        Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(6));
        Assert.Contains(outcome.Records, r => r.Succeeded);
        Assert.Contains(outcome.Records, r => r.Error == ErrorKinds.Cancelled);
        Assert.True(outcome.NotSent > 0);
        RunMetrics m = MetricsCalculator.Compute(outcome.Records, outcome.DurationSeconds);
        Assert.Equal(0, m.Failed);
        Assert.True(m.Cancelled > 0);
    }
}
