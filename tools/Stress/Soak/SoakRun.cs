using System.Globalization;
using System.Text;
using Serving.LoadGen.Workload;
using Serving.Stress.Host;
using Serving.Stress.Sampling;

namespace Serving.Stress.Soak;

/// <summary>One row of the soak's CSV: the host process and the client's counters at one moment.</summary>
internal sealed record SoakRow(ProcessSample Process, long Sent, long Completed, long Cancelled, long Refused, long Errors, long Uploads, long Deletes)
{
    /// <summary>The embedded store's log, when it answered.</summary>
    public StoreSample? Store { get; init; }
}

/// <summary>Growth of one series after warm-up: medians of the first and the last window after it.</summary>
internal sealed record Growth(string Name, double Baseline, double Final, double SlopePerMinute)
{
    public double Fraction => Baseline <= 0 ? 0 : Final / Baseline - 1;
}

/// <summary>
/// <c>stress soak</c>: starts the one-process host, uploads adapters, runs mixed traffic (power-law popularity over the
/// base, public and uploaded adapters; streams, non-streamed requests, abandoned streams; an upload and a delete every
/// few seconds) for the given time, samples the host's RSS, threads, managed heap, GC pauses and exceptions, writes a
/// CSV, a PNG and a summary, and checks that memory after warm-up grows by at most the limit.
/// </summary>
internal static class SoakRun
{
    /// <summary>Width of the windows compared after warm-up.</summary>
    public static readonly TimeSpan Window = TimeSpan.FromMinutes(3);

    public static async Task<int> RunAsync(SoakOptions o, TextWriter log, CancellationToken ct)
    {
        Directory.CreateDirectory(o.OutDir);
        // The embedded store on a known port and in a known folder, so its log and files can be sampled too.
        int storePort = StoreProbe.FreePort();
        string storeDir = Path.Combine(Path.GetFullPath(o.OutDir), "store");
        if (Directory.Exists(storeDir)) Directory.Delete(storeDir, recursive: true);
        Directory.CreateDirectory(storeDir);
        string[] hostArgs =
        [
            "--Gateway:RateLimits:RequestsPerMinute", "10000000", "--Gateway:RateLimits:TokensPerMinute", "1000000000",
            "--AdapterStore:EmbeddedPort", storePort.ToString(CultureInfo.InvariantCulture), "--AdapterStore:EmbeddedDataDirectory", storeDir,
            .. o.HostArgs,
        ];
        await using var host = await StandaloneProcess.StartAsync(o.HostExecutable, o.Port, hostArgs, Path.Combine(o.OutDir, "host.log"), ct);
        log.WriteLine($"host pid {host.Pid} at {host.Url} ({o.HostExecutable} {string.Join(' ', hostArgs)})");
        using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = int.MaxValue, UseProxy = false }) { Timeout = Timeout.InfiniteTimeSpan };
        http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", host.Key);
        using var probe = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };

        var sources = Directory.GetDirectories(o.AdapterSource).Where(d => File.Exists(Path.Combine(d, "adapter_config.json"))).Order(StringComparer.Ordinal).ToList();
        if (sources.Count == 0) throw new ArgumentException($"no PEFT folders under {o.AdapterSource}");
        var publicAdapters = sources.Select(Path.GetFileName).OfType<string>().ToList();
        var counters = new SoakCounters();
        var traffic = new SoakTraffic(http, host.Url, o.Model, counters, o);
        await traffic.FillSlotsAsync(sources, ct);

        var total = TimeSpan.FromMinutes(o.Minutes);
        var trace = TraceGenerator.Generate(new WorkloadSpec
        {
            Seed = o.Seed,
            Count = (int)Math.Ceiling(o.Rate * total.TotalSeconds * 1.1) + 10,
            Adapters = AdapterPopularitySpec.PowerLawOver(SoakTraffic.Ranks(publicAdapters, o.UploadedAdapters), o.Alpha),
            PromptLength = new LengthRange(8, 64),
            OutputLength = new LengthRange(16, 96),
            Rate = o.Rate,
        });
        log.WriteLine(FormattableString.Invariant(
            $"soak: {o.Minutes} min at {o.Rate} req/s, {o.UploadedAdapters} uploaded adapters (one replaced every {o.ChurnSeconds} s) + {publicAdapters.Count} public + base, α={o.Alpha}, {100 * o.NonStreamShare:0}% non-streamed, {100 * o.CancelShare:0}% of streams abandoned"));

        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        stop.CancelAfter(total);
        var origin = TimeProvider.System.GetTimestamp();
        double Elapsed() => TimeProvider.System.GetElapsedTime(origin).TotalSeconds;
        var rows = new List<SoakRow>();
        var csvPath = Path.Combine(o.OutDir, "soak.csv");
        await using var csv = new StreamWriter(csvPath) { AutoFlush = true };
        await csv.WriteLineAsync(CsvHeader);

        async Task SampleLoopAsync()
        {
            while (!stop.IsCancellationRequested)
            {
                var s = await ProcessProbe.SampleAsync(host.Pid, Elapsed(), probe, host.Url + "/metrics", CancellationToken.None);
                var store = await StoreProbe.SampleAsync(storePort, storeDir, CancellationToken.None);
                var row = new SoakRow(s, counters.Sent, counters.Completed, counters.Cancelled, counters.Refused, counters.Errors, counters.Uploads, counters.Deletes) { Store = store };
                lock (rows) rows.Add(row);
                await csv.WriteLineAsync(CsvLine(row));
                log.WriteLine(FormattableString.Invariant(
                    $"{s.Seconds,7:0} s  RSS {s.RssBytes / 1048576.0,6:0.0} MiB  heap {(s.ManagedHeapBytes ?? 0) / 1048576.0,6:0.0} MiB  threads {s.Threads,3}  GC pause {s.GcPauseSeconds ?? 0,6:0.000} s  sent {row.Sent}  done {row.Completed}  cancelled {row.Cancelled}  refused {row.Refused}  errors {row.Errors}  uploads {row.Uploads}  deletes {row.Deletes}{(store is null ? "" : $"  store log {store.TailBytes / 1048576.0:0.0}/{store.BeginBytes / 1048576.0:0.0}/{store.MemoryBytes / 1048576.0:0.0} MiB (tail/begin/memory)")}"));
                try { await Task.Delay(TimeSpan.FromSeconds(o.SampleSeconds), stop.Token); } catch (OperationCanceledException) { break; }
            }
        }

        async Task ChurnLoopAsync()
        {
            int n = 0;
            while (!stop.IsCancellationRequested)
            {
                try { await Task.Delay(TimeSpan.FromSeconds(o.ChurnSeconds), stop.Token); } catch (OperationCanceledException) { break; }
                try
                {
                    await traffic.ChurnAsync(n % o.UploadedAdapters, sources[n % sources.Count], stop.Token);
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                    break;
                }
                catch (Exception e) when (e is HttpRequestException or IOException)
                {
                    counters.CountChurnError();
                }
                n++;
            }
        }

        async Task TrafficLoopAsync()
        {
            var rng = new DeterministicRandom(o.Seed, stream: 17);
            var inFlight = new HashSet<Task>();
            using var gate = new SemaphoreSlim(o.MaxInFlight);
            foreach (var r in trace)
            {
                double wait = r.ArrivalSeconds - Elapsed();
                if (wait > 0)
                {
                    try { await Task.Delay(TimeSpan.FromSeconds(wait), stop.Token); } catch (OperationCanceledException) { break; }
                }
                if (stop.IsCancellationRequested) break;
                if (!gate.Wait(0))
                {
                    counters.CountSkipped();
                    continue;
                }
                var t = Task.Run(async () =>
                {
                    try { await traffic.SendAsync(r, rng, stop.Token); }
                    finally { gate.Release(); }
                }, CancellationToken.None);
                lock (inFlight) inFlight.Add(t);
                _ = t.ContinueWith(done => { lock (inFlight) inFlight.Remove(done); }, TaskScheduler.Default);
            }
            Task[] left;
            lock (inFlight) left = [.. inFlight];
            await Task.WhenAll(left);
        }

        await Task.WhenAll(SampleLoopAsync(), ChurnLoopAsync(), TrafficLoopAsync());

        List<SoakRow> final;
        lock (rows) final = [.. rows];
        var growth = GrowthAfterWarmup(final, TimeSpan.FromMinutes(o.WarmupMinutes));
        string png = o.Png ?? Path.Combine(o.OutDir, "soak.png");
        SoakPlot.Write(png, final, o);
        string summary = Summary(o, counters, growth, final, traffic.ErrorDetails);
        await File.WriteAllTextAsync(Path.Combine(o.OutDir, "soak.md"), summary, CancellationToken.None);
        log.WriteLine(summary);
        log.WriteLine($"wrote {csvPath}, {png}, {Path.Combine(o.OutDir, "soak.md")}");
        bool pass = growth.All(g => g.Name != "RSS" || g.Fraction <= o.GrowthLimit);
        return pass ? 0 : 1;
    }

    /// <summary>
    /// RSS and managed heap after warm-up: the median of the first <see cref="Window"/> after it against the median of
    /// the last <see cref="Window"/> of the run, and the least-squares slope over everything after warm-up.
    /// </summary>
    internal static IReadOnlyList<Growth> GrowthAfterWarmup(IReadOnlyList<SoakRow> rows, TimeSpan warmup)
    {
        var after = rows.Where(r => r.Process.Seconds >= warmup.TotalSeconds).ToList();
        if (after.Count < 2) return [];
        double end = after[^1].Process.Seconds;
        Growth Of(string name, Func<SoakRow, double?> value)
        {
            var points = after.Where(r => value(r) is not null).Select(r => (X: r.Process.Seconds, Y: value(r)!.Value)).ToList();
            if (points.Count < 2) return new Growth(name, 0, 0, 0);
            double baseline = Median(points.Where(p => p.X < warmup.TotalSeconds + Window.TotalSeconds).Select(p => p.Y));
            double final = Median(points.Where(p => p.X > end - Window.TotalSeconds).Select(p => p.Y));
            return new Growth(name, baseline, final, Slope(points) * 60);
        }
        return [Of("RSS", r => r.Process.RssBytes / 1048576.0), Of("managed heap", r => r.Process.ManagedHeapBytes / 1048576.0),
            Of("RSS outside the GC's committed memory", r => r.Process.GcCommittedBytes is { } c ? (r.Process.RssBytes - c) / 1048576.0 : null)];
    }

    internal static double Median(IEnumerable<double> values)
    {
        var v = values.Order().ToArray();
        if (v.Length == 0) return 0;
        return v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
    }

    internal static double Slope(IReadOnlyList<(double X, double Y)> points)
    {
        double mx = points.Average(p => p.X), my = points.Average(p => p.Y);
        double sxx = points.Sum(p => (p.X - mx) * (p.X - mx));
        return sxx == 0 ? 0 : points.Sum(p => (p.X - mx) * (p.Y - my)) / sxx;
    }

    private const string CsvHeader = "seconds,rss_mib,threads,managed_heap_mib,gc_committed_mib,gc_pause_seconds_total,gc_collections_total,exceptions_total,sent,completed,cancelled,refused,errors,uploads,deletes,rss_anon_mib,store_log_tail_mib,store_log_begin_mib,store_log_memory_mib,store_files_mib";

    private static string CsvLine(SoakRow r)
    {
        static string N(double? v, string f = "0.###") => v is { } x ? x.ToString(f, CultureInfo.InvariantCulture) : "";
        var s = r.Process;
        return string.Join(',', N(s.Seconds, "0.#"), N(s.RssBytes / 1048576.0), s.Threads.ToString(CultureInfo.InvariantCulture), N(s.ManagedHeapBytes / 1048576.0),
            N(s.GcCommittedBytes / 1048576.0), N(s.GcPauseSeconds, "0.####"), N(s.GcCollections, "0"), N(s.Exceptions, "0"),
            N(r.Sent, "0"), N(r.Completed, "0"), N(r.Cancelled, "0"), N(r.Refused, "0"), N(r.Errors, "0"), N(r.Uploads, "0"), N(r.Deletes, "0"),
            N(s.RssAnonBytes / 1048576.0), N(r.Store?.TailBytes / 1048576.0), N(r.Store?.BeginBytes / 1048576.0), N(r.Store?.MemoryBytes / 1048576.0),
            N(r.Store?.FileBytes / 1048576.0));
    }

    private static string Summary(SoakOptions o, SoakCounters c, IReadOnlyList<Growth> growth, IReadOnlyList<SoakRow> rows, IEnumerable<string> errors)
    {
        var sb = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        sb.AppendLine(inv, $"soak {o.Minutes} min, warm-up {o.WarmupMinutes} min, {o.Rate} req/s offered, sampled every {o.SampleSeconds} s ({rows.Count} samples)");
        sb.AppendLine();
        sb.AppendLine(inv, $"requests: sent {c.Sent}, completed {c.Completed}, abandoned by the client {c.Cancelled}, refused 429/503 {c.Refused} ({c.RefusedWithoutRetryAfter} without Retry-After), 404 racing a delete {c.RacedDelete}, errors {c.Errors}, not sent (in-flight cap) {c.Skipped}");
        sb.AppendLine(inv, $"adapters: uploaded {c.Uploads}, deleted {c.Deletes}, churn failures {c.ChurnErrors}");
        if (rows.Count > 0)
        {
            var first = rows[0].Process;
            var last = rows[^1].Process;
            sb.AppendLine(inv, $"threads: {rows.Min(r => r.Process.Threads)}–{rows.Max(r => r.Process.Threads)} (last {last.Threads}); GC pause total {last.GcPauseSeconds ?? 0:0.000} s over {last.GcCollections ?? 0} collections; exceptions thrown {last.Exceptions ?? 0}");
            sb.AppendLine(inv, $"RSS: first sample {first.RssBytes / 1048576.0:0.0} MiB, max {rows.Max(r => r.Process.RssBytes) / 1048576.0:0.0} MiB, last {last.RssBytes / 1048576.0:0.0} MiB");
            if (rows.FirstOrDefault(r => r.Store is not null)?.Store is { } s0 && rows.LastOrDefault(r => r.Store is not null)?.Store is { } s1)
            {
                sb.AppendLine(inv, $"store log (MiB, first → last sample): tail {s0.TailBytes / 1048576.0:0.0} → {s1.TailBytes / 1048576.0:0.0}, begin {s0.BeginBytes / 1048576.0:0.0} → {s1.BeginBytes / 1048576.0:0.0}, in memory {s0.MemoryBytes / 1048576.0:0.0} → {s1.MemoryBytes / 1048576.0:0.0} (max {rows.Max(r => r.Store?.MemoryBytes ?? 0) / 1048576.0:0.0}), files {(s0.FileBytes ?? 0) / 1048576.0:0.0} → {(s1.FileBytes ?? 0) / 1048576.0:0.0} (max {rows.Max(r => r.Store?.FileBytes ?? 0) / 1048576.0:0.0})");
            }
        }
        sb.AppendLine();
        sb.AppendLine("| after warm-up | median of first 3 min (MiB) | median of last 3 min (MiB) | growth | slope (MiB/min) | limit |");
        sb.AppendLine("|---|---|---|---|---|---|");
        foreach (var g in growth)
        {
            sb.AppendLine(inv, $"| {g.Name} | {g.Baseline:0.0} | {g.Final:0.0} | {100 * g.Fraction:+0.0;-0.0}% | {g.SlopePerMinute:+0.00;-0.00} | {(g.Name != "RSS" ? "(not a limit)" : g.Fraction <= o.GrowthLimit ? $"holds ({100 * o.GrowthLimit:0}%)" : $"EXCEEDED ({100 * o.GrowthLimit:0}%)")} |");
        }
        var list = errors.ToList();
        if (list.Count > 0)
        {
            sb.AppendLine();
            sb.AppendLine("first errors:");
            foreach (var e in list.Take(20)) sb.AppendLine("  " + e);
        }
        return sb.ToString();
    }
}
