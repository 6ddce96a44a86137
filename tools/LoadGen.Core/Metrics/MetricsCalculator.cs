namespace Serving.LoadGen.Metrics;

/// <summary>Turns request records into <see cref="RunMetrics"/>: a pure function, no clock, no I/O.</summary>
public static class MetricsCalculator
{
    /// <summary>Name used in the per-adapter breakdown for requests to the base model.</summary>
    public const string BaseModelLabel = "(base)";

    /// <summary>Computes the metrics of one run.</summary>
    /// <param name="records">Every request of the run.</param>
    /// <param name="durationSeconds">Wall time of the run; null means first start to last end of the records.</param>
    /// <param name="slo">Goodput targets.</param>
    /// <param name="topAdapters">How many adapters the breakdown keeps.</param>
    /// <param name="binSeconds">Width of the throughput-over-time bins.</param>
    public static RunMetrics Compute(IReadOnlyList<RequestRecord> records, double? durationSeconds = null, SloTargets? slo = null, int topAdapters = 10, double binSeconds = 1.0)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(binSeconds);
        slo ??= new SloTargets();
        var counted = records.Where(r => r.Error != ErrorKinds.Cancelled).ToList();
        var ok = counted.Where(r => r.Succeeded).ToList();
        double duration = durationSeconds ?? (records.Count == 0 ? 0 : records.Max(r => r.EndSeconds) - records.Min(r => r.StartSeconds));
        double Per(double x) => duration > 0 ? x / duration : 0;

        long input = ok.Sum(r => (long)r.PromptTokens);
        long output = ok.Sum(r => (long)r.OutputTokens);
        int good = slo.Any ? ok.Count(r => MeetsSlo(r, slo)) : 0;

        var errors = new SortedDictionary<string, int>(StringComparer.Ordinal);
        foreach (RequestRecord r in counted.Where(r => !r.Succeeded))
        {
            errors[r.Error!] = errors.GetValueOrDefault(r.Error!) + 1;
        }

        return new RunMetrics
        {
            Requests = counted.Count,
            Completed = ok.Count,
            Failed = counted.Count - ok.Count,
            Cancelled = records.Count - counted.Count,
            DurationSeconds = duration,
            TotalInputTokens = input,
            TotalOutputTokens = output,
            RequestThroughput = Per(ok.Count),
            OutputTokenThroughput = Per(output),
            TotalTokenThroughput = Per(input + output),
            Goodput = slo.Any ? Per(good) : null,
            SloAttainment = slo.Any ? (ok.Count == 0 ? 0 : (double)good / ok.Count) : null,
            TtftMs = Distribution.Of(ok.Select(r => r.TtftSeconds).OfType<double>().Select(Ms)),
            TpotMs = Distribution.Of(ok.Select(Tpot).OfType<double>().Select(Ms)),
            ItlMs = Distribution.Of(ok.Where(r => r.Streamed).SelectMany(Gaps).Select(Ms)),
            E2eMs = Distribution.Of(ok.Select(r => Ms(r.E2eSeconds))),
            Refused = counted.Count(r => r.Refused),
            RefusedWithoutRetryAfter = counted.Count(r => r.Refused && string.IsNullOrEmpty(r.RetryAfter)),
            Errors = errors,
            PerAdapter = PerAdapter(counted, duration, topAdapters),
            ThroughputOverTime = Bins(ok, duration, binSeconds),
        };
    }

    /// <summary>TPOT in seconds: (E2E − TTFT)/(output − 1) for streamed requests with more than one output token.</summary>
    public static double? Tpot(RequestRecord r) =>
        r.TtftSeconds is double ttft && r.OutputTokens > 1 ? (r.E2eSeconds - ttft) / (r.OutputTokens - 1) : null;

    /// <summary>Whether a completed request meets every target (TPOT counts as 0 with one output token, as in vLLM).</summary>
    public static bool MeetsSlo(RequestRecord r, SloTargets slo)
    {
        if (slo.TtftMs is double ttftLimit && (r.TtftSeconds is not double ttft || Ms(ttft) > ttftLimit))
        {
            return false;
        }

        if (slo.TpotMs is double tpotLimit && Ms(Tpot(r) ?? 0) > tpotLimit)
        {
            return false;
        }

        return slo.E2eMs is not double e2eLimit || Ms(r.E2eSeconds) <= e2eLimit;
    }

    private static double Ms(double seconds) => seconds * 1000.0;

    private static IEnumerable<double> Gaps(RequestRecord r)
    {
        for (int i = 1; i < r.ChunkSeconds.Count; i++)
        {
            yield return r.ChunkSeconds[i] - r.ChunkSeconds[i - 1];
        }
    }

    private static List<AdapterMetrics> PerAdapter(List<RequestRecord> counted, double duration, int top) =>
        counted
            .GroupBy(r => r.Adapter ?? BaseModelLabel, StringComparer.Ordinal)
            .Select(g =>
            {
                var ok = g.Where(r => r.Succeeded).ToList();
                long output = ok.Sum(r => (long)r.OutputTokens);
                return new AdapterMetrics(
                    g.Key,
                    g.Count(),
                    ok.Count,
                    g.Count() - ok.Count,
                    output,
                    duration > 0 ? output / duration : 0,
                    Distribution.Of(ok.Select(r => r.TtftSeconds).OfType<double>().Select(Ms)),
                    Distribution.Of(ok.Select(Tpot).OfType<double>().Select(Ms)),
                    Distribution.Of(ok.Select(r => Ms(r.E2eSeconds))));
            })
            .OrderByDescending(a => a.Requests)
            .ThenBy(a => a.Adapter, StringComparer.Ordinal)
            .Take(Math.Max(0, top))
            .ToList();

    private static List<ThroughputBin> Bins(List<RequestRecord> ok, double duration, double width)
    {
        double end = Math.Max(duration, ok.Count == 0 ? 0 : ok.Max(r => r.EndSeconds));
        int count = Math.Max(1, (int)Math.Ceiling(end / width));
        var requests = new int[count];
        var tokens = new double[count];
        int Bin(double t) => Math.Clamp((int)Math.Floor(t / width), 0, count - 1);
        foreach (RequestRecord r in ok)
        {
            requests[Bin(r.EndSeconds)]++;
            if (r.ChunkSeconds.Count > 0)
            {
                // Usage gives only a total; spread it evenly over the chunks that carried it.
                double perChunk = (double)r.OutputTokens / r.ChunkSeconds.Count;
                foreach (double t in r.ChunkSeconds)
                {
                    tokens[Bin(t)] += perChunk;
                }
            }
            else
            {
                tokens[Bin(r.EndSeconds)] += r.OutputTokens;
            }
        }

        return Enumerable.Range(0, count).Select(i => new ThroughputBin(i * width, requests[i], tokens[i], tokens[i] / width)).ToList();
    }
}
