using Serving.LoadGen.Client;
using Serving.LoadGen.Metrics;
using Serving.LoadGen.Workload;

namespace Serving.LoadGen;

/// <summary>One measured point of a benchmark: the metrics and the raw per-request records they came from.</summary>
/// <param name="Metrics">vLLM-style metrics (TTFT, TPOT, ITL, E2E, throughputs, errors, per adapter).</param>
/// <param name="Outcome">The runner's records, duration, interruption and requests not sent.</param>
public sealed record BenchmarkPoint(RunMetrics Metrics, RunOutcome Outcome)
{
    /// <summary>Records of the requests that failed (an error kind other than cancelled).</summary>
    public IReadOnlyList<RequestRecord> Failures =>
        Outcome.Records.Where(r => !r.Succeeded && r.Error != ErrorKinds.Cancelled).ToArray();
}

/// <summary>
/// The entry points benchmarks use (tools/LoadGen/README.md, "Using it from benchmarks"): build a fixed-length trace,
/// then run it closed loop (C requests in flight) or open loop through an <see cref="IRequestSender"/>, usually an
/// <see cref="OpenAiLoadClient"/>, and get the <see cref="RunMetrics"/> back. The same code the command line runs.
/// </summary>
public static class LoadBenchmark
{
    /// <summary>
    /// <paramref name="count"/> requests with exactly <paramref name="promptTokens"/> prompt words and
    /// <paramref name="outputTokens"/> as <c>max_tokens</c>, adapters drawn from <paramref name="adapters"/> (base model
    /// only when null), arrivals all at once (closed loop ignores them). Deterministic for a seed.
    /// </summary>
    public static IReadOnlyList<TraceRequest> FixedLengthTrace(int count, int promptTokens, int outputTokens, AdapterPopularitySpec? adapters = null, ulong seed = 0) =>
        TraceGenerator.Generate(new WorkloadSpec
        {
            Count = count,
            Seed = seed,
            Adapters = adapters ?? new AdapterPopularitySpec { Kind = AdapterPopularityKind.None },
            PromptLength = LengthRange.Exactly(promptTokens),
            OutputLength = LengthRange.Exactly(outputTokens),
        });

    /// <summary>
    /// Sends <paramref name="requests"/> keeping <paramref name="concurrency"/> in flight (a worker takes the next request
    /// as soon as its previous one ends) and computes the metrics over the run's wall time (start to last end).
    /// </summary>
    public static Task<BenchmarkPoint> ClosedLoopAsync(IRequestSender sender, IReadOnlyList<TraceRequest> requests, int concurrency,
        SloTargets? slo = null, TimeSpan? duration = null, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(concurrency, 1);
        return RunAsync(sender, new RunPlan
        {
            Requests = requests,
            Mode = LoadMode.ClosedLoop,
            Concurrency = concurrency,
            Duration = duration ?? TimeSpan.FromMinutes(30),
        }, slo, cancellationToken);
    }

    /// <summary>Runs any <see cref="RunPlan"/> (open or closed loop) and computes its metrics.</summary>
    public static async Task<BenchmarkPoint> RunAsync(IRequestSender sender, RunPlan plan, SloTargets? slo = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(sender);
        ArgumentNullException.ThrowIfNull(plan);
        RunOutcome outcome = await new LoadRunner(sender).RunAsync(plan, null, cancellationToken).ConfigureAwait(false);
        return new BenchmarkPoint(MetricsCalculator.Compute(outcome.Records, outcome.DurationSeconds, slo), outcome);
    }
}
