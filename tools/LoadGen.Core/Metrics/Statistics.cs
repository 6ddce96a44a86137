namespace Serving.LoadGen.Metrics;

/// <summary>Summary of a sample, in milliseconds for latencies.</summary>
public sealed record Distribution(int Count, double Mean, double Std, double Min, double P50, double P90, double P99, double Max)
{
    /// <summary>The distribution of an empty sample (all zeros).</summary>
    public static Distribution Empty { get; } = new(0, 0, 0, 0, 0, 0, 0, 0);

    /// <summary>Summarises <paramref name="values"/> (any order).</summary>
    public static Distribution Of(IEnumerable<double> values)
    {
        double[] sorted = values.ToArray();
        if (sorted.Length == 0)
        {
            return Empty;
        }

        Array.Sort(sorted);
        double mean = sorted.Average();
        // Population standard deviation, as numpy.std (what vLLM reports).
        double variance = sorted.Sum(v => (v - mean) * (v - mean)) / sorted.Length;
        return new Distribution(
            sorted.Length,
            mean,
            Math.Sqrt(variance),
            sorted[0],
            Statistics.Percentile(sorted, 50),
            Statistics.Percentile(sorted, 90),
            Statistics.Percentile(sorted, 99),
            sorted[^1]);
    }
}

/// <summary>Small numeric helpers.</summary>
public static class Statistics
{
    /// <summary>
    /// Percentile of an ascending sample with linear interpolation between closest ranks
    /// (numpy.percentile's default, which vLLM's benchmark uses): rank = p/100 · (n − 1).
    /// </summary>
    public static double Percentile(IReadOnlyList<double> sortedAscending, double p)
    {
        if (sortedAscending.Count == 0)
        {
            throw new ArgumentException("Percentile of an empty sample.", nameof(sortedAscending));
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(p, 0);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(p, 100);
        double rank = p / 100.0 * (sortedAscending.Count - 1);
        int lo = (int)Math.Floor(rank);
        int hi = Math.Min(lo + 1, sortedAscending.Count - 1);
        double frac = rank - lo;
        return sortedAscending[lo] + (sortedAscending[hi] - sortedAscending[lo]) * frac;
    }
}
