using Microsoft.AspNetCore.Server.Kestrel.Core;
using Serving.LoadGen.Client;
using Serving.LoadGen.Metrics;
using Serving.LoadGen.Tests.Support;
using Serving.LoadGen.Workload;
using Xunit;

namespace Serving.LoadGen.Tests.Client;

/// <summary>
/// The library entry points the node, gateway and adapter-slot benchmarks use: a fixed-length trace with power-law
/// adapters, a closed loop at concurrency C in-process, and the metrics object back.
/// </summary>
public sealed class LoadBenchmarkTests
{
    [Fact]
    public void FixedLengthTrace_HasExactLengthsAndPowerLawAdaptersOverGivenNames()
    {
        string[] names = ["german", "irc", "italian", "polish"];
        IReadOnlyList<TraceRequest> trace = LoadBenchmark.FixedLengthTrace(4000, 16, 64, AdapterPopularitySpec.PowerLawOver(names, 1.0), seed: 3);

        Assert.Equal(4000, trace.Count);
        Assert.All(trace, r => Assert.Equal(16, r.PromptTokens));
        Assert.All(trace, r => Assert.Equal(64, r.OutputTokens));
        Assert.All(trace, r => Assert.Equal(16, PromptSynthesizer.EstimateTokens(r.Prompt)));
        Assert.All(trace, r => Assert.Equal(0, r.ArrivalSeconds));

        // P(k) ∝ 1/(k+1): 12/25, 6/25, 4/25, 3/25. Each frequency within 4 standard errors of its expectation.
        double[] expected = [12 / 25.0, 6 / 25.0, 4 / 25.0, 3 / 25.0];
        for (int k = 0; k < names.Length; k++)
        {
            double observed = trace.Count(r => r.Adapter == names[k]) / 4000.0;
            double se = Math.Sqrt(expected[k] * (1 - expected[k]) / 4000);
            Assert.InRange(observed, expected[k] - 4 * se, expected[k] + 4 * se);
        }

        // Same seed, same trace; base model only without a spec.
        Assert.Equal(trace, LoadBenchmark.FixedLengthTrace(4000, 16, 64, AdapterPopularitySpec.PowerLawOver(names, 1.0), seed: 3));
        Assert.All(LoadBenchmark.FixedLengthTrace(10, 4, 4), r => Assert.Null(r.Adapter));
    }

    [Fact]
    public void PowerLawOver_MatchesGeneratedPowerLawProbabilities()
    {
        var generated = new AdapterPopularity(new AdapterPopularitySpec { Kind = AdapterPopularityKind.PowerLaw, Count = 5, Alpha = 0.7 });
        var named = new AdapterPopularity(AdapterPopularitySpec.PowerLawOver(["a", "b", "c", "d", "e"], 0.7));
        Assert.Equal(generated.Probabilities, named.Probabilities);
        Assert.Throws<ArgumentOutOfRangeException>(() => AdapterPopularitySpec.PowerLawOver(["a"], -1));
    }

    [Fact]
    public async Task ClosedLoop_AdapterModelsReachServer_ConcurrencyHeld_MetricsReturned()
    {
        await using var server = await ScriptedOpenAiServer.StartAsync(new Script { TtftMs = 30, ItlMs = 10, Tokens = null });
        string[] names = ["a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7"];
        IReadOnlyList<TraceRequest> trace = LoadBenchmark.FixedLengthTrace(24, 8, 5, AdapterPopularitySpec.PowerLawOver(names, 1.0), seed: 1);
        using var client = new OpenAiLoadClient(new ClientOptions
        {
            BaseUrl = server.BaseUrl, BaseModel = "base", Endpoint = ApiEndpoint.Completions, IgnoreEos = true, Timeout = TimeSpan.FromSeconds(20),
        });

        BenchmarkPoint point = await LoadBenchmark.ClosedLoopAsync(client, trace, concurrency: 4);

        RunMetrics m = point.Metrics;
        Assert.Empty(point.Failures);
        Assert.Equal(24, m.Completed);
        Assert.Equal(24 * 5, m.TotalOutputTokens);
        Assert.Equal(24 * 5 / point.Outcome.DurationSeconds, m.OutputTokenThroughput, 9);
        Assert.Equal(24, m.TtftMs.Count);
        Assert.Equal(24 * 4, m.ItlMs.Count);
        Assert.InRange(m.TtftMs.Min, 25, 10_000);
        Assert.Equal(trace.GroupBy(r => r.Adapter).Count(), m.PerAdapter.Count);

        // The server saw model "base:adapter", the completions route, ignore_eos and each trace request once.
        Observation[] seen = server.Observations.ToArray();
        Assert.Equal(24, seen.Length);
        var byId = trace.ToDictionary(r => $"loadgen-{r.Id}");
        Assert.All(seen, o =>
        {
            Assert.Equal("/v1/completions", o.Path);
            Assert.Equal("base:" + byId[o.RequestId].Adapter, o.Body.GetProperty("model").GetString());
            Assert.True(o.Body.GetProperty("ignore_eos").GetBoolean());
            Assert.Equal(5, o.Body.GetProperty("max_tokens").GetInt32());
        });

        // Closed loop at 4: never more than 4 requests inside the server at once, and 4 at some point.
        var events = seen.SelectMany(o => new[] { (o.ReceivedTs, +1), (o.DoneTs, -1) }).OrderBy(e => e.Item1).ThenBy(e => e.Item2);
        int inside = 0, most = 0;
        foreach (var (_, delta) in events)
        {
            inside += delta;
            most = Math.Max(most, inside);
        }
        Assert.Equal(4, most);
    }

    [Fact]
    public async Task ClientOverGivenHandler_SendsThroughIt()
    {
        await using var server = await ScriptedOpenAiServer.StartAsync(new Script { TtftMs = 1, ItlMs = 1, Tokens = 3 }, HttpProtocols.Http1);
        var handler = new CountingHandler(new SocketsHttpHandler { UseProxy = false });
        using var client = new OpenAiLoadClient(new ClientOptions { BaseUrl = server.BaseUrl }, handler);

        BenchmarkPoint point = await LoadBenchmark.ClosedLoopAsync(client, LoadBenchmark.FixedLengthTrace(3, 4, 3), concurrency: 1);

        Assert.Equal(3, point.Metrics.Completed);
        Assert.Equal(3, handler.Sent);
    }

    private sealed class CountingHandler(HttpMessageHandler inner) : DelegatingHandler(inner)
    {
        public int Sent;

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref Sent);
            return base.SendAsync(request, cancellationToken);
        }
    }
}
