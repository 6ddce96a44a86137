using System.Diagnostics;

namespace Serving.Inference.Adapters;

/// <summary>
/// Per-phase timing of <c>serving.lora::SegmentedLora</c> for benchmarks (AdapterBench <c>--only p</c>): off by default,
/// when off the operator reads one static bool per call and nothing else. Counters are process-wide (sessions
/// that run at once add to the same counters). Besides sums it keeps each call's phase times
/// (the first <see cref="MaxSamples"/> since <see cref="Reset"/>), so a benchmark on a loaded machine can take medians
/// per projection: a preemption lands in one call's sample instead of every call's average.
/// </summary>
public static class SegmentedLoraProfile
{
    /// <summary>Calls whose phase times are kept after a <see cref="Reset"/>.</summary>
    public const int MaxSamples = 1 << 16;

    /// <summary>Whether the operator records its phases (set before a run, not during one).</summary>
    public static bool Enabled { get; set; }

    /// <summary>
    /// For benchmarks and tests: run steps of few tokens through the general two-phase path instead of the fused
    /// small-step pass, so both can be timed alternately in one process and checked against each other.
    /// </summary>
    public static bool GeneralPathOnly { get; set; }

    /// <summary>
    /// For benchmarks and tests: run the general path as two phases (every shrink unit, then every expand unit of 512
    /// columns, two pool dispatches) instead of the fused units that shrink and expand a few tokens at once.
    /// </summary>
    public static bool TwoPhase { get; set; }

    /// <summary>For benchmarks and tests: run the small-step pass on the calling thread only (no rank split over the pool).</summary>
    public static bool SmallStepInline { get; set; }

    internal static long Copies, Calls, Dispatches, FixedTicks, ShrinkTicks, ExpandTicks, YBytes, AdapterBytes, Tokens;
    private static readonly long[] Samples = new long[3 * MaxSamples];

    /// <summary>The counters since the last <see cref="Reset"/> (times in milliseconds, summed over calls).</summary>
    public static SegmentedLoraPhases Snapshot() =>
        new(Calls, Dispatches, Ms(FixedTicks), Ms(ShrinkTicks), Ms(ExpandTicks), YBytes, AdapterBytes, Tokens, Copies);

    /// <summary>Zeroes the counters and the kept samples.</summary>
    public static void Reset() => Copies = Calls = Dispatches = FixedTicks = ShrinkTicks = ExpandTicks = YBytes = AdapterBytes = Tokens = 0;

    internal static void Add(long fixedTicks, long shrinkTicks, long expandTicks, int dispatches, long tokens, long yBytes, long adapterBytes, bool copied)
    {
        var call = Interlocked.Increment(ref Calls) - 1;
        if (call < MaxSamples)
        {
            Samples[3 * call] = fixedTicks;
            Samples[3 * call + 1] = shrinkTicks;
            Samples[3 * call + 2] = expandTicks;
        }
        Interlocked.Add(ref FixedTicks, fixedTicks);
        Interlocked.Add(ref ShrinkTicks, shrinkTicks);
        Interlocked.Add(ref ExpandTicks, expandTicks);
        Interlocked.Add(ref Dispatches, dispatches);
        Interlocked.Add(ref Tokens, tokens);
        Interlocked.Add(ref YBytes, yBytes);
        Interlocked.Add(ref AdapterBytes, adapterBytes);
        if (copied) Interlocked.Increment(ref Copies);
    }

    /// <summary>
    /// Per step, in milliseconds: the sum over the <paramref name="callsPerStep"/> operator calls of a step of each
    /// call's median phase times (call i of a step is the same projection of the same layer in every step); with
    /// <paramref name="stepStride"/> > 1, only steps <paramref name="firstStep"/>, + stride, … (runs that alternate
    /// configurations).
    /// </summary>
    public static (double FixedMs, double ShrinkMs, double ExpandMs) MedianStep(int callsPerStep, int firstStep = 0, int stepStride = 1)
    {
        if (callsPerStep <= 0) return default;
        var steps = (int)Math.Min(Calls, MaxSamples) / callsPerStep;
        var kept = steps > firstStep ? (steps - firstStep + stepStride - 1) / stepStride : 0;
        if (kept == 0) return default;
        var column = new long[kept];
        var sums = new double[3];
        for (var phase = 0; phase < 3; phase++)
        {
            for (var call = 0; call < callsPerStep; call++)
            {
                for (var step = 0; step < kept; step++) column[step] = Samples[3 * ((firstStep + step * stepStride) * callsPerStep + call) + phase];
                Array.Sort(column);
                sums[phase] += Ms(column[kept / 2]);
            }
        }
        return (sums[0], sums[1], sums[2]);
    }

    private static double Ms(long ticks) => ticks * 1000.0 / Stopwatch.Frequency;
}

/// <summary>
/// Sums over operator calls: <paramref name="Calls"/>; <paramref name="Dispatches"/> passes handed to the intra-op pool
/// (<c>ParallelFor</c>); <paramref name="FixedMs"/> the per-call cost outside the passes (inputs, plan validation,
/// output, scratch, unit lists, copy of y when not in place); <paramref name="ShrinkMs"/> phase 1 (h = x·Aᵀ);
/// <paramref name="ExpandMs"/> phase 2 (y += h·B; for the small-step pass, the whole fused pass and its merge);
/// <paramref name="YBytes"/> bytes of y read and written (and the copy); <paramref name="AdapterBytes"/> bytes of A and B
/// rows read; <paramref name="Tokens"/> planned tokens; <paramref name="Copies"/> calls that ONNX Runtime did not run in
/// place (y copied to the output first).
/// </summary>
public readonly record struct SegmentedLoraPhases(long Calls, long Dispatches, double FixedMs, double ShrinkMs, double ExpandMs,
    long YBytes, long AdapterBytes, long Tokens, long Copies)
{
    /// <summary>The difference of two snapshots.</summary>
    public static SegmentedLoraPhases operator -(SegmentedLoraPhases a, SegmentedLoraPhases b) => new(a.Calls - b.Calls,
        a.Dispatches - b.Dispatches, a.FixedMs - b.FixedMs, a.ShrinkMs - b.ShrinkMs, a.ExpandMs - b.ExpandMs,
        a.YBytes - b.YBytes, a.AdapterBytes - b.AdapterBytes, a.Tokens - b.Tokens, a.Copies - b.Copies);

    /// <summary>The sum of two differences of snapshots.</summary>
    public static SegmentedLoraPhases operator +(SegmentedLoraPhases a, SegmentedLoraPhases b) => new(a.Calls + b.Calls,
        a.Dispatches + b.Dispatches, a.FixedMs + b.FixedMs, a.ShrinkMs + b.ShrinkMs, a.ExpandMs + b.ExpandMs,
        a.YBytes + b.YBytes, a.AdapterBytes + b.AdapterBytes, a.Tokens + b.Tokens, a.Copies + b.Copies);
}
