using Serving.LoadGen.Metrics;

namespace Serving.LoadGen.Reporting;

/// <summary>The JSON result file: one document per invocation, one point per sweep value.</summary>
public sealed record ResultDocument
{
    /// <summary>Tool name.</summary>
    public string Tool { get; init; } = "Serving.LoadGen";

    /// <summary>When the run started (UTC, ISO 8601).</summary>
    public required string StartedUtc { get; init; }

    /// <summary>The exact command line.</summary>
    public required string Command { get; init; }

    /// <summary>Where it ran.</summary>
    public required MachineInfo Machine { get; init; }

    /// <summary>Workload and client settings, for the record.</summary>
    public required IReadOnlyDictionary<string, string> Config { get; init; }

    /// <summary>True when Ctrl+C cut the run short.</summary>
    public bool Interrupted { get; init; }

    /// <summary>One entry per sweep point, in run order.</summary>
    public required IReadOnlyList<SweepPointResult> Points { get; init; }
}

/// <summary>Results of one sweep point.</summary>
/// <param name="Label">E.g. "rate=4" or "concurrency=8".</param>
/// <param name="Mode">"open_loop" or "closed_loop".</param>
/// <param name="Rate">Offered request rate (open loop; null for +inf and closed loop).</param>
/// <param name="Concurrency">Concurrency (closed loop) or cap (open loop), null when none.</param>
/// <param name="NotSent">Requests of the trace not sent before the duration ran out or Ctrl+C.</param>
/// <param name="Metrics">Computed metrics.</param>
public sealed record SweepPointResult(string Label, string Mode, double? Rate, int? Concurrency, int NotSent, RunMetrics Metrics);
