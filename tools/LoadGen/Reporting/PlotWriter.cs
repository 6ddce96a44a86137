using Serving.LoadGen.Metrics;

namespace Serving.LoadGen.Reporting;

/// <summary>Writes PNG plots with ScottPlot.</summary>
public static class PlotWriter
{
    private const int Width = 900;
    private const int Height = 600;

    /// <summary>Writes every plot for a result into <paramref name="directory"/> and returns the paths.</summary>
    /// <param name="directory">Output folder.</param>
    /// <param name="document">Results.</param>
    /// <param name="recordsByPoint">Raw records per point (same order as the points), for the CDFs.</param>
    public static IReadOnlyList<string> WriteAll(string directory, ResultDocument document, IReadOnlyList<IReadOnlyList<RequestRecord>> recordsByPoint)
    {
        Directory.CreateDirectory(directory);
        var paths = new List<string>();
        for (int i = 0; i < document.Points.Count; i++)
        {
            string slug = Slug(document.Points[i].Label);
            paths.Add(LatencyCdf(Path.Combine(directory, $"latency_cdf_{slug}.png"), document.Points[i].Label, recordsByPoint[i]));
            paths.Add(ThroughputOverTime(Path.Combine(directory, $"throughput_{slug}.png"), document.Points[i]));
        }

        if (document.Points.Count > 1)
        {
            paths.Add(Sweep(Path.Combine(directory, "sweep_latency_vs_load.png"), document.Points));
        }

        return paths;
    }

    /// <summary>Empirical CDFs of TTFT, TPOT, ITL and E2E for one point.</summary>
    public static string LatencyCdf(string path, string label, IReadOnlyList<RequestRecord> records)
    {
        var ok = records.Where(r => r.Succeeded).ToList();
        var series = new (string Name, IEnumerable<double> SecondsValues)[]
        {
            ("TTFT", ok.Select(r => r.TtftSeconds).OfType<double>()),
            ("TPOT", ok.Select(MetricsCalculator.Tpot).OfType<double>()),
            ("ITL", ok.SelectMany(r => r.ChunkSeconds.Skip(1).Zip(r.ChunkSeconds, (b, a) => b - a))),
            ("E2E", ok.Select(r => r.E2eSeconds)),
        };

        var plot = new ScottPlot.Plot();
        foreach ((string name, IEnumerable<double> seconds) in series)
        {
            double[] xs = seconds.Select(s => s * 1000).Order().ToArray();
            if (xs.Length == 0)
            {
                continue;
            }

            double[] ys = Enumerable.Range(1, xs.Length).Select(k => (double)k / xs.Length).ToArray();
            var line = plot.Add.ScatterLine(xs, ys);
            line.LegendText = $"{name} (n={xs.Length})";
            line.LineWidth = 2;
        }

        plot.Title($"Latency CDF — {label}");
        plot.XLabel("latency (ms)");
        plot.YLabel("fraction of requests ≤ x");
        plot.Axes.SetLimitsY(0, 1.02);
        plot.ShowLegend(ScottPlot.Alignment.LowerRight);
        plot.SavePng(path, Width, Height);
        return path;
    }

    /// <summary>Output tokens per second and completed requests per bin over the run.</summary>
    public static string ThroughputOverTime(string path, SweepPointResult point)
    {
        IReadOnlyList<ThroughputBin> bins = point.Metrics.ThroughputOverTime;
        double width = bins.Count > 1 ? bins[1].StartSeconds - bins[0].StartSeconds : 1.0;
        double[] xs = bins.Select(b => b.StartSeconds + width / 2).ToArray();
        var plot = new ScottPlot.Plot();
        if (xs.Length > 0)
        {
            var tokens = plot.Add.ScatterLine(xs, bins.Select(b => b.OutputTokensPerSecond).ToArray());
            tokens.LegendText = "output tokens/s";
            tokens.LineWidth = 2;
            var requests = plot.Add.ScatterLine(xs, bins.Select(b => b.RequestsCompleted / width).ToArray());
            requests.LegendText = "requests completed/s (right axis)";
            requests.Axes.YAxis = plot.Axes.Right;
        }

        plot.Title($"Throughput over time — {point.Label}");
        plot.XLabel("time since start (s)");
        plot.YLabel("output tokens/s");
        plot.Axes.Right.Label.Text = "requests/s";
        plot.ShowLegend(ScottPlot.Alignment.UpperRight);
        plot.SavePng(path, Width, Height);
        return path;
    }

    /// <summary>
    /// TTFT and E2E percentiles and achieved throughput against offered load: the rate for open-loop sweeps
    /// (points at rate=inf cannot be placed and are left out), the concurrency for closed-loop sweeps.
    /// </summary>
    public static string Sweep(string path, IReadOnlyList<SweepPointResult> points)
    {
        bool closed = points.All(p => p.Mode == "closed_loop");
        var shown = points.Where(p => closed ? p.Concurrency is not null : p.Rate is not null).ToList();
        double[] xs = shown.Select(p => closed ? p.Concurrency!.Value : p.Rate!.Value).ToArray();
        var plot = new ScottPlot.Plot();
        void Line(string name, Func<RunMetrics, double> y, bool right = false)
        {
            var line = plot.Add.Scatter(xs, shown.Select(p => y(p.Metrics)).ToArray());
            line.LegendText = name;
            line.LineWidth = 2;
            line.MarkerSize = 7;
            if (right)
            {
                line.Axes.YAxis = plot.Axes.Right;
            }
        }

        if (xs.Length > 0)
        {
            Line("TTFT p50 (ms)", m => m.TtftMs.P50);
            Line("TTFT p99 (ms)", m => m.TtftMs.P99);
            Line("E2E p50 (ms)", m => m.E2eMs.P50);
            Line("achieved req/s (right axis)", m => m.RequestThroughput, right: true);
        }

        int hidden = points.Count - shown.Count;
        plot.Title((closed ? "Latency vs concurrency" : "Latency vs offered load") + (hidden > 0 ? $" ({hidden} point(s) at rate=inf not shown)" : ""));
        plot.XLabel(closed ? "concurrency (requests in flight)" : "offered rate (req/s)");
        plot.YLabel("latency (ms)");
        plot.Axes.Right.Label.Text = "achieved req/s";
        plot.ShowLegend(ScottPlot.Alignment.UpperLeft);
        plot.SavePng(path, Width, Height);
        return path;
    }

    private static string Slug(string label) =>
        new(label.Select(c => char.IsAsciiLetterOrDigit(c) || c == '.' || c == '-' ? c : '_').ToArray());
}
