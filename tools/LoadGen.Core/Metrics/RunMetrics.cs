namespace Serving.LoadGen.Metrics;

/// <summary>The metrics of one run (one sweep point), as vLLM's benchmark_serving reports them. Latencies in ms.</summary>
public sealed record RunMetrics
{
    /// <summary>Requests sent (succeeded + failed; cancelled ones excluded).</summary>
    public int Requests { get; init; }

    /// <summary>Requests that completed successfully.</summary>
    public int Completed { get; init; }

    /// <summary>Requests that failed (any error kind except cancelled).</summary>
    public int Failed { get; init; }

    /// <summary>Requests cut off by Ctrl+C or the end of the run.</summary>
    public int Cancelled { get; init; }

    /// <summary>Wall time of the run in seconds (throughputs divide by this).</summary>
    public double DurationSeconds { get; init; }

    /// <summary>Prompt tokens of completed requests.</summary>
    public long TotalInputTokens { get; init; }

    /// <summary>Output tokens of completed requests.</summary>
    public long TotalOutputTokens { get; init; }

    /// <summary>Completed requests per second.</summary>
    public double RequestThroughput { get; init; }

    /// <summary>Output tokens per second.</summary>
    public double OutputTokenThroughput { get; init; }

    /// <summary>Input + output tokens per second.</summary>
    public double TotalTokenThroughput { get; init; }

    /// <summary>Completed requests meeting every SLO, per second; null without SLOs.</summary>
    public double? Goodput { get; init; }

    /// <summary>Fraction of completed requests meeting every SLO; null without SLOs.</summary>
    public double? SloAttainment { get; init; }

    /// <summary>Time to first token (streamed requests).</summary>
    public Distribution TtftMs { get; init; } = Distribution.Empty;

    /// <summary>Time per output token excluding the first: (E2E − TTFT)/(output tokens − 1), requests with more than one token.</summary>
    public Distribution TpotMs { get; init; } = Distribution.Empty;

    /// <summary>Inter-token latency: every gap between consecutive content chunks.</summary>
    public Distribution ItlMs { get; init; } = Distribution.Empty;

    /// <summary>End-to-end latency of completed requests.</summary>
    public Distribution E2eMs { get; init; } = Distribution.Empty;

    /// <summary>Requests answered 429 or 503 (refused for load or rate).</summary>
    public int Refused { get; init; }

    /// <summary>Of <see cref="Refused"/>, those whose response carried no <c>Retry-After</c> header.</summary>
    public int RefusedWithoutRetryAfter { get; init; }

    /// <summary>Failed requests by error kind.</summary>
    public IReadOnlyDictionary<string, int> Errors { get; init; } = new SortedDictionary<string, int>(StringComparer.Ordinal);

    /// <summary>The most requested adapters (top N by requests).</summary>
    public IReadOnlyList<AdapterMetrics> PerAdapter { get; init; } = [];

    /// <summary>Throughput in fixed time bins from the start of the run.</summary>
    public IReadOnlyList<ThroughputBin> ThroughputOverTime { get; init; } = [];
}

/// <summary>Per-adapter breakdown.</summary>
public sealed record AdapterMetrics(
    string Adapter,
    int Requests,
    int Completed,
    int Failed,
    long OutputTokens,
    double OutputTokenThroughput,
    Distribution TtftMs,
    Distribution TpotMs,
    Distribution E2eMs);

/// <summary>One time bin: requests completed and output tokens received within [StartSeconds, StartSeconds + width).</summary>
public sealed record ThroughputBin(double StartSeconds, int RequestsCompleted, double OutputTokens, double OutputTokensPerSecond);
