using System.Globalization;

namespace Serving.Stress.Sampling;

/// <summary>What one look at the host process gave: the kernel's view (/proc) and the runtime's (its /metrics).</summary>
/// <param name="Seconds">Since the start of the run.</param>
/// <param name="RssBytes">Resident set size (<c>VmRSS</c>).</param>
/// <param name="Threads">OS threads (<c>Threads</c>).</param>
/// <param name="ManagedHeapBytes">Managed heap after the last GC, all generations (<c>dotnet_gc_last_collection_heap_size_bytes</c>); null when not scraped.</param>
/// <param name="GcCommittedBytes">Memory the GC had committed at the last GC; null when not scraped.</param>
/// <param name="GcPauseSeconds">Total GC pause time since the process started; null when not scraped.</param>
/// <param name="GcCollections">Collections since start, all generations; null when not scraped.</param>
/// <param name="Exceptions">Exceptions thrown since start; null when not scraped.</param>
internal sealed record ProcessSample(double Seconds, long RssBytes, int Threads, long? ManagedHeapBytes, long? GcCommittedBytes,
    double? GcPauseSeconds, long? GcCollections, long? Exceptions)
{
    /// <summary>Anonymous resident memory (<c>RssAnon</c>: heaps, GC, native allocations; RSS minus mapped files); null when absent.</summary>
    public long? RssAnonBytes { get; init; }
}

/// <summary>Reads <c>/proc/PID/status</c> and the .NET runtime instruments from a Prometheus scrape.</summary>
internal static class ProcessProbe
{
    /// <summary>Metric names of the runtime meter (<c>System.Runtime</c>) as the OpenTelemetry Prometheus exporter writes them.</summary>
    public const string HeapSize = "dotnet_gc_last_collection_heap_size_bytes";
    public const string Committed = "dotnet_gc_last_collection_memory_committed_size_bytes";
    public const string PauseTime = "dotnet_gc_pause_time_seconds_total";
    public const string Collections = "dotnet_gc_collections_total";
    public const string ExceptionsTotal = "dotnet_exceptions_total";

    /// <summary><c>RssAnon</c> in bytes from the text of <c>/proc/PID/status</c>; null when absent.</summary>
    public static long? ParseRssAnon(string status)
    {
        foreach (var line in status.Split('\n'))
        {
            if (!line.StartsWith("RssAnon:", StringComparison.Ordinal)) continue;
            var parts = line[8..].Trim().Split(' ', StringSplitOptions.RemoveEmptyEntries);
            return long.Parse(parts[0], CultureInfo.InvariantCulture) * (parts.Length > 1 && parts[1] == "kB" ? 1024 : 1);
        }
        return null;
    }

    /// <summary>(VmRSS in bytes, Threads) from the text of <c>/proc/PID/status</c>.</summary>
    public static (long RssBytes, int Threads) ParseStatus(string status)
    {
        long rss = -1;
        int threads = -1;
        foreach (var line in status.Split('\n'))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                var parts = line[6..].Trim().Split(' ', StringSplitOptions.RemoveEmptyEntries);
                rss = long.Parse(parts[0], CultureInfo.InvariantCulture) * (parts.Length > 1 && parts[1] == "kB" ? 1024 : 1);
            }
            else if (line.StartsWith("Threads:", StringComparison.Ordinal))
            {
                threads = int.Parse(line[8..].Trim(), CultureInfo.InvariantCulture);
            }
        }
        if (rss < 0 || threads < 0) throw new FormatException("no VmRSS or Threads line in the status text");
        return (rss, threads);
    }

    /// <summary>Sum of every series of each metric in a Prometheus text exposition (labels ignored; comments skipped).</summary>
    public static Dictionary<string, double> ParsePrometheus(string text)
    {
        var sums = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var raw in text.Split('\n'))
        {
            var line = raw.Trim();
            if (line.Length == 0 || line[0] == '#') continue;
            int nameEnd = line.IndexOfAny(['{', ' ']);
            if (nameEnd <= 0) continue;
            string name = line[..nameEnd];
            int valueStart = line[nameEnd] == '{' ? line.IndexOf('}', nameEnd) + 1 : nameEnd;
            if (valueStart <= 0) continue;
            var fields = line[valueStart..].Trim().Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length == 0 || !double.TryParse(fields[0], NumberStyles.Float, CultureInfo.InvariantCulture, out double value)) continue;
            sums[name] = sums.GetValueOrDefault(name) + value;
        }
        return sums;
    }

    /// <summary>Samples <paramref name="pid"/> and, when <paramref name="metricsUrl"/> is given, the runtime metrics it serves.</summary>
    public static async Task<ProcessSample> SampleAsync(int pid, double seconds, HttpClient http, string? metricsUrl, CancellationToken ct)
    {
        string status = await File.ReadAllTextAsync($"/proc/{pid}/status", ct);
        var (rss, threads) = ParseStatus(status);
        long? anon = ParseRssAnon(status);
        if (metricsUrl is null) return new ProcessSample(seconds, rss, threads, null, null, null, null, null) { RssAnonBytes = anon };
        Dictionary<string, double> m;
        try
        {
            m = ParsePrometheus(await http.GetStringAsync(metricsUrl, ct));
        }
        catch (HttpRequestException)
        {
            return new ProcessSample(seconds, rss, threads, null, null, null, null, null) { RssAnonBytes = anon };
        }
        long? L(string name) => m.TryGetValue(name, out var v) ? (long)v : null;
        return new ProcessSample(seconds, rss, threads, L(HeapSize), L(Committed), m.TryGetValue(PauseTime, out var p) ? p : null, L(Collections), L(ExceptionsTotal)) { RssAnonBytes = anon };
    }
}
