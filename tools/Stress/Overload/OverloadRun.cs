using System.Globalization;
using System.Text;
using Serving.LoadGen;
using Serving.LoadGen.Client;
using Serving.LoadGen.Metrics;
using Serving.LoadGen.Workload;
using Serving.Stress.Host;
using Serving.Stress.Sampling;

namespace Serving.Stress.Overload;

/// <summary>Settings of <c>stress overload</c>.</summary>
internal sealed record OverloadOptions
{
    public required string HostExecutable { get; init; }
    public IReadOnlyList<string> HostArgs { get; init; } = [];
    public int Port { get; init; } = 18090;
    public string Model { get; init; } = "demo";
    public int PromptTokens { get; init; } = 16;
    public int OutputTokens { get; init; } = 32;
    /// <summary>Requests in flight while measuring capacity (closed loop); 0 = twice the node's batch (<c>--Node:MaxBatch</c>, 16).</summary>
    public int CapacityConcurrency { get; init; } = 32;
    public int CapacityRequests { get; init; } = 600;
    /// <summary>Skip the capacity measurement and use this (req/s).</summary>
    public double? Capacity { get; init; }
    public IReadOnlyList<double> Multiples { get; init; } = [2, 4, 8];
    public double Seconds { get; init; } = 40;
    public ulong Seed { get; init; }
    public required string OutDir { get; init; }
    public string? Png { get; init; }
}

/// <summary>One offered load level and what it got.</summary>
internal sealed record OverloadLevel(
    double Multiple, double OfferedRate, int Sent, int Completed, int Refused, int RefusedWithoutRetryAfter, int ErrorEvents,
    int HalfAnswered, int OtherFailures, double AchievedRate, Distribution Ttft, double RssStartMb, double RssMaxMb, double RssEndMb)
{
    /// <summary>Share of sent requests not refused (429/503): they were taken and answered (or failed after being taken).</summary>
    public double AdmittedShare => Sent == 0 ? 0 : (Sent - Refused) / (double)Sent;

    public double RefusedShare => Sent == 0 ? 0 : Refused / (double)Sent;
}

/// <summary>
/// Measures the node's capacity (closed loop, fixed short request, through the gateway) then offers open-loop Poisson load
/// at multiples of it, sampling the host's RSS, and writes a table (Markdown, CSV) and a plot.
/// </summary>
internal static class OverloadRun
{
    public static async Task<int> RunAsync(OverloadOptions o, TextWriter log, CancellationToken ct)
    {
        Directory.CreateDirectory(o.OutDir);
        string[] hostArgs =
        [
            // The tenant's own limits would shed first (600 requests/min by default): lift them, capacity is what is measured.
            "--Gateway:RateLimits:RequestsPerMinute", "10000000", "--Gateway:RateLimits:TokensPerMinute", "1000000000",
            .. o.HostArgs,
        ];
        await using var host = await StandaloneProcess.StartAsync(o.HostExecutable, o.Port, hostArgs, Path.Combine(o.OutDir, "host.log"), ct);
        log.WriteLine($"host pid {host.Pid} at {host.Url} ({o.HostExecutable} {string.Join(' ', hostArgs)})");
        using var client = new OpenAiLoadClient(new ClientOptions
        {
            BaseUrl = new Uri(host.Url), BaseModel = o.Model, ApiKey = host.Key, IgnoreEos = true, Timeout = TimeSpan.FromSeconds(120),
        });

        // Warm-up: JIT, connections, the first graphs.
        await LoadBenchmark.ClosedLoopAsync(client, LoadBenchmark.FixedLengthTrace(40, o.PromptTokens, o.OutputTokens, seed: o.Seed + 1), 4, cancellationToken: ct);

        double capacity;
        if (o.Capacity is { } given)
        {
            capacity = given;
            log.WriteLine($"capacity (given): {capacity:0.0} req/s");
        }
        else
        {
            var point = await LoadBenchmark.ClosedLoopAsync(client, LoadBenchmark.FixedLengthTrace(o.CapacityRequests, o.PromptTokens, o.OutputTokens, seed: o.Seed + 2),
                o.CapacityConcurrency, duration: TimeSpan.FromSeconds(60), cancellationToken: ct);
            capacity = point.Metrics.RequestThroughput;
            log.WriteLine(FormattableString.Invariant(
                $"capacity: {capacity:0.0} req/s (closed loop, {o.CapacityConcurrency} in flight, {point.Metrics.Completed} requests, {point.Metrics.Failed} failed, TTFT p99 {point.Metrics.TtftMs.P99:0} ms)"));
        }

        var levels = new List<OverloadLevel>();
        var rssSeries = new List<(double Multiple, IReadOnlyList<ProcessSample> Samples)>();
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        foreach (double multiple in o.Multiples)
        {
            double rate = multiple * capacity;
            int count = (int)Math.Ceiling(rate * o.Seconds) + 1;
            var trace = TraceGenerator.WithArrivals(LoadBenchmark.FixedLengthTrace(count, o.PromptTokens, o.OutputTokens, seed: o.Seed + 3), rate, cv: 1, o.Seed + 4);
            var samples = new List<ProcessSample>();
            using var stopSampling = CancellationTokenSource.CreateLinkedTokenSource(ct);
            var started = DateTime.UtcNow;
            var sampling = Task.Run(async () =>
            {
                while (!stopSampling.IsCancellationRequested)
                {
                    samples.Add(await ProcessProbe.SampleAsync(host.Pid, (DateTime.UtcNow - started).TotalSeconds, http, null, CancellationToken.None));
                    try { await Task.Delay(250, stopSampling.Token); } catch (OperationCanceledException) { break; }
                }
            }, CancellationToken.None);
            var run = await LoadBenchmark.RunAsync(client, new RunPlan { Requests = trace, Mode = LoadMode.OpenLoop, Duration = TimeSpan.FromSeconds(o.Seconds) }, cancellationToken: ct);
            await stopSampling.CancelAsync();
            await sampling;
            var level = Summarize(multiple, rate, run.Outcome.Records, run.Metrics, samples);
            levels.Add(level);
            rssSeries.Add((multiple, samples));
            log.WriteLine(Row(level));
            await WaitIdleAsync(client, o, ct); // the next level starts from an empty queue
        }

        string table = Table(capacity, o, levels);
        await File.WriteAllTextAsync(Path.Combine(o.OutDir, "overload.md"), table, ct);
        await File.WriteAllTextAsync(Path.Combine(o.OutDir, "overload.csv"), Csv(levels), ct);
        string png = o.Png ?? Path.Combine(o.OutDir, "overload.png");
        OverloadPlot.Write(png, capacity, levels, rssSeries);
        log.WriteLine(table);
        log.WriteLine($"wrote {Path.Combine(o.OutDir, "overload.md")}, overload.csv, {png}");
        return 0;
    }

    internal static OverloadLevel Summarize(double multiple, double rate, IReadOnlyList<RequestRecord> records, RunMetrics m, IReadOnlyList<ProcessSample> samples)
    {
        var counted = records.Where(r => r.Error != ErrorKinds.Cancelled).ToList();
        // LoadGen calls both a mid-stream error event and a stream cut without [DONE] malformed; only the second is half-answered.
        int errorEvents = counted.Count(r => r.Error == ErrorKinds.MalformedStream && r.ErrorDetail?.StartsWith("error in stream", StringComparison.Ordinal) == true);
        int halfAnswered = counted.Count(r => r.Error == ErrorKinds.MalformedStream) - errorEvents;
        int other = counted.Count(r => !r.Succeeded && !r.Refused && r.Error != ErrorKinds.MalformedStream);
        double Mb(long b) => b / (1024.0 * 1024.0);
        return new OverloadLevel(multiple, rate, counted.Count, m.Completed, m.Refused, m.RefusedWithoutRetryAfter, errorEvents, halfAnswered, other,
            m.RequestThroughput, m.TtftMs,
            samples.Count > 0 ? Mb(samples[0].RssBytes) : 0, samples.Count > 0 ? Mb(samples.Max(s => s.RssBytes)) : 0, samples.Count > 0 ? Mb(samples[^1].RssBytes) : 0);
    }

    private static async Task WaitIdleAsync(OpenAiLoadClient client, OverloadOptions o, CancellationToken ct)
    {
        // A probe request answers only once the node has room again: retry while it is refused.
        for (int i = 0; i < 120; i++)
        {
            var r = await client.SendAsync(LoadBenchmark.FixedLengthTrace(1, o.PromptTokens, 1, seed: (ulong)i)[0], TimeProvider.System.GetTimestamp(), ct);
            if (r.Succeeded) break;
            await Task.Delay(500, ct);
        }
        await Task.Delay(TimeSpan.FromSeconds(3), ct);
    }

    private static string F(double v, string format = "0.0") => v.ToString(format, CultureInfo.InvariantCulture);

    private static string Row(OverloadLevel l) =>
        $"| {F(l.Multiple, "0.#")}× | {F(l.OfferedRate)} | {l.Sent} | {F(100 * l.AdmittedShare)}% | {F(l.AchievedRate)} | {F(l.Ttft.P50, "0")} | {F(l.Ttft.P99, "0")} | "
        + $"{F(100 * l.RefusedShare)}% | {l.RefusedWithoutRetryAfter} | {l.ErrorEvents} | {l.HalfAnswered} | {l.OtherFailures} | {F(l.RssStartMb, "0")} / {F(l.RssMaxMb, "0")} / {F(l.RssEndMb, "0")} |";

    internal static string Table(double capacity, OverloadOptions o, IReadOnlyList<OverloadLevel> levels)
    {
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"capacity {F(capacity)} req/s (closed loop, {o.CapacityConcurrency} in flight; prompt {o.PromptTokens} words, {o.OutputTokens} output tokens, ignore_eos, streamed chat, base model); {F(o.Seconds, "0")} s per level");
        sb.AppendLine();
        sb.AppendLine("| offered | req/s | sent | admitted | done req/s | TTFT p50 (ms) | TTFT p99 (ms) | 429/503 | without Retry-After | error events | half-answered | other failures | RSS MiB start / max / end |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (var l in levels) sb.AppendLine(Row(l));
        return sb.ToString();
    }

    private static string Csv(IReadOnlyList<OverloadLevel> levels)
    {
        var sb = new StringBuilder("multiple,offered_rps,sent,completed,refused,refused_without_retry_after,error_events,half_answered,other_failures,achieved_rps,admitted_share,ttft_p50_ms,ttft_p90_ms,ttft_p99_ms,ttft_max_ms,rss_start_mib,rss_max_mib,rss_end_mib\n");
        foreach (var l in levels)
        {
            sb.AppendLine(string.Join(',', new[]
            {
                F(l.Multiple, "0.###"), F(l.OfferedRate, "0.###"), l.Sent.ToString(CultureInfo.InvariantCulture), l.Completed.ToString(CultureInfo.InvariantCulture),
                l.Refused.ToString(CultureInfo.InvariantCulture), l.RefusedWithoutRetryAfter.ToString(CultureInfo.InvariantCulture),
                l.ErrorEvents.ToString(CultureInfo.InvariantCulture), l.HalfAnswered.ToString(CultureInfo.InvariantCulture), l.OtherFailures.ToString(CultureInfo.InvariantCulture),
                F(l.AchievedRate, "0.###"), F(l.AdmittedShare, "0.####"), F(l.Ttft.P50, "0.#"), F(l.Ttft.P90, "0.#"), F(l.Ttft.P99, "0.#"), F(l.Ttft.Max, "0.#"),
                F(l.RssStartMb, "0.#"), F(l.RssMaxMb, "0.#"), F(l.RssEndMb, "0.#"),
            }));
        }
        return sb.ToString();
    }
}
