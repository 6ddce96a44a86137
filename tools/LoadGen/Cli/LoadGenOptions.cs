using Serving.LoadGen.Client;
using Serving.LoadGen.Metrics;
using Serving.LoadGen.Workload;

namespace Serving.LoadGen.Cli;

/// <summary>What the command line asked for.</summary>
public sealed record LoadGenOptions
{
    /// <summary>"run", "generate" or "help".</summary>
    public string Command { get; init; } = "run";

    /// <summary>Client settings.</summary>
    public ClientOptions Client { get; init; } = new();

    /// <summary>Workload settings (its Rate is the first sweep rate, or +inf).</summary>
    public WorkloadSpec Workload { get; init; } = new();

    /// <summary>Requests per point when --requests was given (a replayed trace is cut to it); null means all of a replayed trace.</summary>
    public int? RequestLimit { get; init; }

    /// <summary>Open-loop rates to sweep (req/s; +inf allowed). Empty with no concurrencies: one open-loop point.</summary>
    public IReadOnlyList<double> Rates { get; init; } = [];

    /// <summary>Closed-loop concurrencies to sweep.</summary>
    public IReadOnlyList<int> Concurrencies { get; init; } = [];

    /// <summary>Cap on requests in flight in open loop (0 = none).</summary>
    public int MaxConcurrency { get; init; }

    /// <summary>Longest time a point sends requests.</summary>
    public TimeSpan Duration { get; init; } = TimeSpan.FromSeconds(300);

    /// <summary>Replay this JSONL trace instead of generating one.</summary>
    public string? TraceIn { get; init; }

    /// <summary>Where "generate" writes the trace.</summary>
    public string? TraceOut { get; init; }

    /// <summary>Goodput targets.</summary>
    public SloTargets Slo { get; init; } = new();

    /// <summary>Adapters in the per-adapter breakdown.</summary>
    public int TopAdapters { get; init; } = 10;

    /// <summary>Output folder for result.json, summary.txt, traces and plots.</summary>
    public string? OutDir { get; init; }

    /// <summary>Markdown file to append one result line per point to (e.g. docs/benchmarks.md).</summary>
    public string? AppendMarkdown { get; init; }

    /// <summary>Skip the PNG plots.</summary>
    public bool NoPlots { get; init; }

    /// <summary>No live progress bar (one line per point instead).</summary>
    public bool NoProgress { get; init; }

    /// <summary>Unmeasured requests sent one by one before the first point (JIT, connections, endpoint check).</summary>
    public int Warmup { get; init; } = 1;

    /// <summary>Width of the throughput-over-time bins in seconds.</summary>
    public double BinSeconds { get; init; } = 1.0;
}
