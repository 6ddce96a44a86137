namespace Serving.LoadGen.Workload;

/// <summary>Open-loop arrival times: Gamma inter-arrival gaps with mean 1/rate and coefficient of variation cv.</summary>
public static class ArrivalProcess
{
    /// <summary>Random stream reserved for arrivals (see <see cref="DeterministicRandom"/>).</summary>
    public const ulong Stream = 3;

    /// <summary>
    /// Cumulative arrival times in seconds, rounded to microseconds (the trace file's resolution, so a replayed
    /// trace equals the generated one). Shape k = 1/cv², scale θ = cv²/rate, as in S-LoRA's generator.
    /// </summary>
    public static double[] Generate(int count, double rate, double cv, ulong seed)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (!(rate > 0))
        {
            throw new ArgumentOutOfRangeException(nameof(rate), rate, "Rate must be > 0 (use +inf to send all at once).");
        }

        var times = new double[count];
        if (double.IsPositiveInfinity(rate))
        {
            return times;
        }

        if (!(cv > 0) || double.IsInfinity(cv))
        {
            throw new ArgumentOutOfRangeException(nameof(cv), cv, "cv must be finite and > 0.");
        }

        var rng = new DeterministicRandom(seed, Stream);
        double shape = 1.0 / (cv * cv);
        double scale = cv * cv / rate;
        double t = 0;
        for (int i = 0; i < count; i++)
        {
            t += rng.NextGamma(shape, scale);
            times[i] = RoundToMicroseconds(t);
        }

        return times;
    }

    /// <summary>Rounds seconds to whole microseconds.</summary>
    public static double RoundToMicroseconds(double seconds) => Math.Round(seconds * 1e6) / 1e6;
}
