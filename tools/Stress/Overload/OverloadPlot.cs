using ScottPlot;
using Serving.Stress.Sampling;

namespace Serving.Stress.Overload;

/// <summary>The overload curves: TTFT of admitted requests and admitted share against offered load; the host's RSS over each level.</summary>
internal static class OverloadPlot
{
    public static void Write(string path, double capacity, IReadOnlyList<OverloadLevel> levels, IReadOnlyList<(double Multiple, IReadOnlyList<ProcessSample> Samples)> rss)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        var multiplot = new ScottPlot.Multiplot();
        multiplot.AddPlots(2);

        var top = multiplot.GetPlot(0);
        double[] xs = levels.Select(l => l.Multiple).ToArray();
        var p50 = top.Add.Scatter(xs, levels.Select(l => l.Ttft.P50).ToArray());
        p50.LegendText = "TTFT p50 of admitted (ms)";
        var p99 = top.Add.Scatter(xs, levels.Select(l => l.Ttft.P99).ToArray());
        p99.LegendText = "TTFT p99 of admitted (ms)";
        var admitted = top.Add.Scatter(xs, levels.Select(l => 100 * l.AdmittedShare).ToArray());
        admitted.LegendText = "admitted (% of sent, right axis)";
        admitted.Axes.YAxis = top.Axes.Right;
        admitted.LinePattern = ScottPlot.LinePattern.Dashed;
        foreach (var s in new[] { p50, p99, admitted }) s.LineWidth = 2;
        top.Title(FormattableString.Invariant($"Standalone host at multiples of its capacity ({capacity:0.0} req/s)"));
        top.XLabel("offered load (× capacity)");
        top.YLabel("ms");
        top.Axes.Right.Label.Text = "% admitted";
        top.Axes.SetLimitsY(0, Math.Max(1, levels.Max(l => l.Ttft.P99)) * 1.15);
        top.Axes.SetLimitsY(0, 105, top.Axes.Right);
        top.ShowLegend(ScottPlot.Alignment.UpperLeft);

        var bottom = multiplot.GetPlot(1);
        foreach (var (multiple, samples) in rss)
        {
            if (samples.Count == 0) continue;
            var line = bottom.Add.ScatterLine(samples.Select(s => s.Seconds).ToArray(), samples.Select(s => s.RssBytes / (1024.0 * 1024.0)).ToArray());
            line.LegendText = FormattableString.Invariant($"{multiple:0.#}× capacity");
            line.LineWidth = 2;
        }
        bottom.Title("Host RSS during each level");
        bottom.XLabel("seconds into the level");
        bottom.YLabel("RSS (MiB)");
        bottom.Axes.SetLimitsY(0, Math.Max(1, rss.SelectMany(r => r.Samples).DefaultIfEmpty().Max(s => s?.RssBytes ?? 0) / (1024.0 * 1024.0)) * 1.15);
        bottom.ShowLegend(ScottPlot.Alignment.LowerRight);
        multiplot.SavePng(path, 900, 900);
    }
}
