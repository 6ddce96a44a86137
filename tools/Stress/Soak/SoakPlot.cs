using ScottPlot;
namespace Serving.Stress.Soak;

/// <summary>The soak over time: memory (RSS, managed heap, GC committed) on top; threads, GC pause and errors below.</summary>
internal static class SoakPlot
{
    public static void Write(string path, IReadOnlyList<SoakRow> rows, SoakOptions o)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        var multiplot = new ScottPlot.Multiplot();
        multiplot.AddPlots(2);
        double[] minutes = rows.Select(r => r.Process.Seconds / 60).ToArray();

        var top = multiplot.GetPlot(0);
        void Memory(string name, Func<SoakRow, double?> value)
        {
            var pts = rows.Where(r => value(r) is not null).ToList();
            if (pts.Count == 0) return;
            var line = top.Add.ScatterLine(pts.Select(r => r.Process.Seconds / 60).ToArray(), pts.Select(r => value(r)!.Value).ToArray());
            line.LegendText = name;
            line.LineWidth = 2;
        }
        Memory("RSS (MiB)", r => r.Process.RssBytes / 1048576.0);
        Memory("GC committed (MiB)", r => r.Process.GcCommittedBytes / 1048576.0);
        Memory("managed heap after last GC (MiB)", r => r.Process.ManagedHeapBytes / 1048576.0);
        Memory("store log in memory (MiB)", r => r.Store?.MemoryBytes / 1048576.0);
        Memory("store files on disk (MiB)", r => r.Store?.FileBytes / 1048576.0);
        var warm = top.Add.VerticalLine(o.WarmupMinutes);
        warm.LegendText = "end of warm-up";
        warm.LinePattern = ScottPlot.LinePattern.Dashed;
        top.Title(FormattableString.Invariant($"Soak: standalone host, {o.Rate} req/s mixed traffic, {o.Minutes} min"));
        top.XLabel("minutes");
        top.YLabel("MiB");
        top.Axes.SetLimitsY(0, Math.Max(1, rows.Count == 0 ? 1 : rows.Max(r => r.Process.RssBytes / 1048576.0)) * 1.15);
        top.ShowLegend(ScottPlot.Alignment.LowerRight);

        var bottom = multiplot.GetPlot(1);
        var threads = bottom.Add.ScatterLine(minutes, rows.Select(r => (double)r.Process.Threads).ToArray());
        threads.LegendText = "threads";
        threads.LineWidth = 2;
        var errors = bottom.Add.ScatterLine(minutes, rows.Select(r => (double)r.Errors).ToArray());
        errors.LegendText = "errors (cumulative)";
        errors.LineWidth = 2;
        var pause = bottom.Add.ScatterLine(minutes, rows.Select(r => 1000 * (r.Process.GcPauseSeconds ?? 0)).ToArray());
        pause.LegendText = "GC pause total (ms, right axis)";
        pause.Axes.YAxis = bottom.Axes.Right;
        pause.LineWidth = 2;
        bottom.XLabel("minutes");
        bottom.YLabel("threads / errors");
        bottom.Axes.Right.Label.Text = "GC pause (ms)";
        bottom.ShowLegend(ScottPlot.Alignment.UpperLeft);
        multiplot.SavePng(path, 900, 900);
    }
}
