using Serving.LoadGen.Metrics;
using Xunit;

namespace Serving.LoadGen.Tests.Metrics;

public sealed class MetricsCalculatorTests
{
    private static RequestRecord Streamed(int id, double start, double[] chunks, double end, int outputTokens, string? adapter = "a", int prompt = 10) => new()
    {
        Id = id,
        Adapter = adapter,
        StartSeconds = start,
        EndSeconds = end,
        ChunkSeconds = chunks,
        PromptTokens = prompt,
        OutputTokens = outputTokens,
    };

    [Fact]
    public void Compute_KnownTimestamps_MatchesHandComputedVllmDefinitions()
    {
        // r0: TTFT 0.2, chunks every 0.05 (4 chunks), end 0.4, 4 tokens → TPOT (0.4-0.2)/3, ITL 0.05 ×3.
        // r1: TTFT 0.1, 2 chunks 0.3 apart, end 0.5, 5 tokens (usage) → TPOT (0.5-0.1)/4 = 0.1, ITL 0.3.
        RequestRecord[] records =
        [
            Streamed(0, 0.0, [0.2, 0.25, 0.30, 0.35], 0.4, 4),
            Streamed(1, 1.0, [1.1, 1.4], 1.5, 5, prompt: 20),
        ];

        RunMetrics m = MetricsCalculator.Compute(records, durationSeconds: 2.0);

        Assert.Equal(2, m.Completed);
        Assert.Equal(0, m.Failed);
        Assert.Equal(1.0, m.RequestThroughput, 12);
        Assert.Equal(4.5, m.OutputTokenThroughput, 12);
        Assert.Equal(19.5, m.TotalTokenThroughput, 12);
        Assert.Equal(150, m.TtftMs.Mean, 9);
        Assert.Equal(((200.0 / 3) + 100) / 2, m.TpotMs.Mean, 9);
        Assert.Equal(4, m.ItlMs.Count);
        Assert.Equal((50 + 50 + 50 + 300) / 4.0, m.ItlMs.Mean, 9);
        Assert.Equal(50, m.ItlMs.P50, 9);
        Assert.Equal(450, m.E2eMs.Mean, 9);
        Assert.Equal(50, m.E2eMs.Std, 9);
    }

    [Fact]
    public void Compute_NoDurationGiven_UsesFirstStartToLastEnd()
    {
        RunMetrics m = MetricsCalculator.Compute([Streamed(0, 1.0, [1.1], 2.0, 1), Streamed(1, 1.5, [1.6], 3.0, 3)]);

        Assert.Equal(2.0, m.DurationSeconds, 12);
        Assert.Equal(2.0, m.OutputTokenThroughput, 12);
    }

    [Fact]
    public void Percentile_LinearInterpolation_MatchesNumpy()
    {
        // numpy.percentile([1, 2, 3, 4], [50, 90, 99]) = [2.5, 3.7, 3.97]; of [5] anything = 5.
        double[] v = [1, 2, 3, 4];
        Assert.Equal(2.5, Statistics.Percentile(v, 50), 12);
        Assert.Equal(3.7, Statistics.Percentile(v, 90), 12);
        Assert.Equal(3.97, Statistics.Percentile(v, 99), 12);
        Assert.Equal(1, Statistics.Percentile(v, 0), 12);
        Assert.Equal(5, Statistics.Percentile([5.0], 99), 12);
    }

    [Fact]
    public void Compute_ErrorsByKind_CountedAndExcludedFromLatencies()
    {
        RequestRecord ok = Streamed(0, 0, [0.1], 0.2, 1);
        RequestRecord[] records =
        [
            ok,
            ok with { Id = 1, Error = ErrorKinds.Http(429), ChunkSeconds = [], EndSeconds = 9 },
            ok with { Id = 2, Error = ErrorKinds.Http(429), ChunkSeconds = [] },
            ok with { Id = 3, Error = ErrorKinds.Timeout },
            ok with { Id = 4, Error = ErrorKinds.Cancelled },
        ];

        RunMetrics m = MetricsCalculator.Compute(records, 1.0);

        Assert.Equal(4, m.Requests);
        Assert.Equal(1, m.Completed);
        Assert.Equal(3, m.Failed);
        Assert.Equal(1, m.Cancelled);
        Assert.Equal(new Dictionary<string, int> { ["http_429"] = 2, ["timeout"] = 1 }, m.Errors);
        Assert.Equal(200, m.E2eMs.Max, 9);
        Assert.Equal(2, m.Refused);
        Assert.Equal(2, m.RefusedWithoutRetryAfter);
    }

    [Fact]
    public void Compute_Refusals_CountedWithAndWithoutRetryAfter()
    {
        RequestRecord ok = Streamed(0, 0, [0.1], 0.2, 1);
        RequestRecord[] records =
        [
            ok,
            ok with { Id = 1, Error = ErrorKinds.Http(429), ChunkSeconds = [], RetryAfter = "1" },
            ok with { Id = 2, Error = ErrorKinds.Http(503), ChunkSeconds = [], RetryAfter = "2" },
            ok with { Id = 3, Error = ErrorKinds.Http(503), ChunkSeconds = [] },
            ok with { Id = 4, Error = ErrorKinds.Http(500), ChunkSeconds = [] },
            ok with { Id = 5, Error = ErrorKinds.Http(429), ChunkSeconds = [], RetryAfter = "1" } with { Error = ErrorKinds.Cancelled },
        ];

        RunMetrics m = MetricsCalculator.Compute(records, 1.0);

        Assert.Equal(3, m.Refused);                   // 429 and 503 only; a 500 is no refusal, a cancelled request not counted
        Assert.Equal(1, m.RefusedWithoutRetryAfter);
    }

    [Fact]
    public void Compute_Slo_GoodputCountsRequestsMeetingEveryTarget()
    {
        RequestRecord[] records =
        [
            Streamed(0, 0, [0.1, 0.12, 0.14], 0.14, 3),   // TTFT 100, TPOT 20, E2E 140: good
            Streamed(1, 0, [0.3, 0.32], 0.32, 2),          // TTFT 300: bad
            Streamed(2, 0, [0.1, 0.2], 0.2, 2),            // TPOT 100: bad
            Streamed(3, 0, [0.15], 0.15, 1),               // one token → TPOT 0 (vLLM): good
        ];

        RunMetrics m = MetricsCalculator.Compute(records, 2.0, new SloTargets(TtftMs: 200, TpotMs: 50));

        Assert.Equal(1.0, m.Goodput!.Value, 12);
        Assert.Equal(0.5, m.SloAttainment!.Value, 12);
        Assert.Null(MetricsCalculator.Compute(records, 2.0).Goodput);
        Assert.Equal(0.25, MetricsCalculator.Compute(records, 2.0, new SloTargets(E2eMs: 145)).SloAttainment!.Value, 12);
    }

    [Fact]
    public void Compute_NonStreamed_NoTtftTpotOrItlButE2eAndThroughput()
    {
        var r = new RequestRecord { Id = 0, StartSeconds = 0, EndSeconds = 0.7, Streamed = false, OutputTokens = 10, PromptTokens = 5 };

        RunMetrics m = MetricsCalculator.Compute([r], 1.0);

        Assert.Equal(0, m.TtftMs.Count);
        Assert.Equal(0, m.TpotMs.Count);
        Assert.Equal(0, m.ItlMs.Count);
        Assert.Equal(700, m.E2eMs.P50, 9);
        Assert.Equal(10, m.OutputTokenThroughput, 12);
    }

    [Fact]
    public void Compute_PerAdapter_TopNByRequestsWithBaseLabel()
    {
        var records = new List<RequestRecord>();
        int id = 0;
        foreach ((string? adapter, int n) in new[] { ("x", 3), ("y", 5), ((string?)null, 4), ("z", 1) })
        {
            for (int i = 0; i < n; i++)
            {
                records.Add(Streamed(id++, 0, [0.1], 0.2, 2, adapter));
            }
        }

        RunMetrics m = MetricsCalculator.Compute(records, 1.0, topAdapters: 3);

        Assert.Equal(["y", MetricsCalculator.BaseModelLabel, "x"], m.PerAdapter.Select(a => a.Adapter));
        Assert.Equal([5, 4, 3], m.PerAdapter.Select(a => a.Requests));
        Assert.Equal(10, m.PerAdapter[0].OutputTokens);
    }

    [Fact]
    public void Compute_ThroughputBins_SumToTotalOutputTokens()
    {
        RequestRecord[] records =
        [
            Streamed(0, 0, [0.5, 1.5, 2.5, 2.6], 2.7, 8),
            Streamed(1, 0, [0.2], 0.3, 3),
        ];

        RunMetrics m = MetricsCalculator.Compute(records, 3.0, binSeconds: 1.0);

        Assert.Equal(3, m.ThroughputOverTime.Count);
        Assert.Equal(11, m.ThroughputOverTime.Sum(b => b.OutputTokens), 9);
        Assert.Equal(2 + 3, m.ThroughputOverTime[0].OutputTokens, 9); // one of four chunks of r0 (8/4) + r1
        Assert.Equal(4, m.ThroughputOverTime[2].OutputTokens, 9);
        Assert.Equal(2, m.ThroughputOverTime.Sum(b => b.RequestsCompleted));
    }

    [Fact]
    public void Compute_Empty_ZerosNotExceptions()
    {
        RunMetrics m = MetricsCalculator.Compute([], 0);

        Assert.Equal(0, m.Completed);
        Assert.Equal(0, m.RequestThroughput);
        Assert.Equal(Distribution.Empty, m.TtftMs);
    }
}
