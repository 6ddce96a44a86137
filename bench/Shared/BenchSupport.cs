using System.Diagnostics;
using System.Globalization;

namespace Serving.Bench;

/// <summary>`--key value` and `--flag` options of a benchmark's command line.</summary>
internal sealed class BenchArgs(Dictionary<string, string> values)
{
    public static BenchArgs Parse(string[] args)
    {
        var d = new Dictionary<string, string>();
        for (var i = 0; i < args.Length; i++)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal)) continue;
            var key = args[i][2..];
            d[key] = i + 1 < args.Length && !args[i + 1].StartsWith("--", StringComparison.Ordinal) ? args[++i] : "true";
        }
        return new BenchArgs(d);
    }

    public string Str(string key, string fallback) => values.GetValueOrDefault(key, fallback);
    public int Int(string key, int fallback) => values.TryGetValue(key, out var v) ? int.Parse(v, CultureInfo.InvariantCulture) : fallback;
    public double Double(string key, double fallback) => values.TryGetValue(key, out var v) ? double.Parse(v, CultureInfo.InvariantCulture) : fallback;
    public bool Flag(string key) => values.ContainsKey(key);
    public int[] Ints(string key, string fallback) => Str(key, fallback).Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray();
    public string[] List(string key, string fallback) => Str(key, fallback).Split(',', StringSplitOptions.RemoveEmptyEntries);
}

/// <summary>Medians, ratios and confidence intervals of repeated measurements.</summary>
internal static class BenchStats
{
    public static double Median(IEnumerable<double> values)
    {
        var s = values.Order().ToArray();
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }

    /// <summary>Mean and the half-width of its normal 95% confidence interval.</summary>
    public static (double Mean, double HalfWidth) MeanCi(IReadOnlyList<double> values)
    {
        var mean = values.Average();
        if (values.Count < 2) return (mean, double.NaN);
        var variance = values.Sum(v => (v - mean) * (v - mean)) / (values.Count - 1);
        return (mean, 1.96 * Math.Sqrt(variance / values.Count));
    }

    /// <summary>"m ± h" with the given format.</summary>
    public static string Ci(IReadOnlyList<double> values, string format = "F3")
    {
        var (m, h) = MeanCi(values);
        // The half-width is a magnitude: a signed format (e.g. "+0.000;-0.000") applies to the mean only.
        var widthFormat = format.Split(';')[0].TrimStart('+');
        return $"{m.ToString(format, CultureInfo.InvariantCulture)} ± {h.ToString(widthFormat, CultureInfo.InvariantCulture)}";
    }

    /// <summary>Median of per-pair ratios a/b with min and max, as "r (min–max)".</summary>
    public static string Ratio(IReadOnlyList<double> a, IReadOnlyList<double> b)
    {
        var r = a.Zip(b, (x, y) => x / y).ToList();
        return string.Create(CultureInfo.InvariantCulture, $"{Median(r):F3} ({r.Min():F3}–{r.Max():F3})");
    }
}

/// <summary>What machine a result came from.</summary>
internal static class BenchMachine
{
    public static string Cpu()
    {
        try
        {
            var line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
            return (line?.Split(':', 2)[1].Trim() ?? "unknown CPU") + $", {Environment.ProcessorCount} cores";
        }
        catch (IOException)
        {
            return "unknown CPU";
        }
    }

    /// <summary>The repository root (the folder holding Serving.sln), from the current directory up.</summary>
    public static string Repo()
    {
        var dir = new DirectoryInfo(Directory.GetCurrentDirectory());
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Serving.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("run from inside the repository");
    }

    /// <summary>Appends a block to a markdown file (a results log).</summary>
    public static void AppendMarkdown(string path, string text)
    {
        File.AppendAllText(path, Environment.NewLine + text.TrimEnd() + Environment.NewLine);
        Console.WriteLine($"appended to {path}");
    }

    public static double Seconds(long startTicks) => Stopwatch.GetElapsedTime(startTicks).TotalSeconds;
}

/// <summary>Clocks for timing on a shared machine.</summary>
internal static class BenchClock
{
    /// <summary>CPU time of the calling thread (Linux <c>CLOCK_THREAD_CPUTIME_ID</c>), seconds: with one ONNX Runtime
    /// thread (the caller) it is the work done, whatever else the machine runs.</summary>
    public static double ThreadCpuSeconds() => Read(3, "CLOCK_THREAD_CPUTIME_ID");

    /// <summary>CPU time of the whole process, every thread (Linux <c>CLOCK_PROCESS_CPUTIME_ID</c>), seconds.</summary>
    public static double ProcessCpuSeconds() => Read(2, "CLOCK_PROCESS_CPUTIME_ID");

    private static double Read(int clock, string name)
    {
        if (clock_gettime(clock, out var ts) != 0) throw new InvalidOperationException($"clock_gettime({name}) failed");
        return ts.Seconds + ts.Nanoseconds * 1e-9;
    }

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    private static extern int clock_gettime(int clock, out TimeSpec value);

    private struct TimeSpec
    {
        public long Seconds;
        public long Nanoseconds;
    }
}
