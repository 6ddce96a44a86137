using ScottPlot;

namespace Serving.AdapterQuality;

/// <summary>
/// Kept vs ratio: each setting as the mean ratio over the adapters (x, log scale) against its worst adapter's kept
/// (y), one colour per codec family, the Pareto front of those points, faint per-adapter points, and the targets.
/// </summary>
internal static class ParetoPlot
{
    public static void Write(IReadOnlyList<QualityRow> rows, string path)
    {
        var plot = new Plot();
        var settings = rows.GroupBy(r => r.Setting).Select(g => (Setting: g.Key, Family: Family(g.Key), Ratio: g.Average(r => r.Ratio), Kept: g.Min(r => r.Kept))).ToList();
        var palette = new ScottPlot.Palettes.Category10();
        var families = settings.Select(s => s.Family).Distinct().ToList();
        foreach (var (family, i) in families.Select((f, i) => (f, i)))
        {
            var color = palette.GetColor(i);
            var all = rows.Where(r => Family(r.Setting) == family).ToList();
            var faint = plot.Add.ScatterPoints(all.Select(r => Math.Log10(r.Ratio)).ToArray(), all.Select(r => 100 * Math.Max(r.Kept, -0.1)).ToArray());
            faint.Color = color.WithAlpha(0.25);
            faint.MarkerSize = 4;
            var mine = settings.Where(s => s.Family == family).ToList();
            var points = plot.Add.ScatterPoints(mine.Select(s => Math.Log10(s.Ratio)).ToArray(), mine.Select(s => 100 * Math.Max(s.Kept, -0.1)).ToArray());
            points.Color = color;
            points.MarkerSize = family == "auto" ? 16 : 9;
            if (family == "auto") points.MarkerShape = MarkerShape.FilledDiamond;
            points.LegendText = family;
        }
        var front = settings.Where(s => !settings.Any(o => o.Ratio >= s.Ratio && o.Kept >= s.Kept && (o.Ratio > s.Ratio || o.Kept > s.Kept)))
            .OrderBy(s => s.Ratio).ToList();
        var line = plot.Add.Scatter(front.Select(s => Math.Log10(s.Ratio)).ToArray(), front.Select(s => 100 * s.Kept).ToArray());
        line.Color = Colors.Black;
        line.MarkerSize = 0;
        line.LineWidth = 1.5f;
        line.LegendText = "Pareto front (mean ratio, worst adapter)";
        foreach (double k in new[] { 95.0, 90.0 })
        {
            var h = plot.Add.HorizontalLine(k);
            h.Color = Colors.Gray;
            h.LinePattern = LinePattern.Dashed;
        }
        foreach (double x in new[] { 8.0, 16.0 })
        {
            var v = plot.Add.VerticalLine(Math.Log10(x));
            v.Color = Colors.Gray;
            v.LinePattern = LinePattern.Dashed;
        }
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
        {
            MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
            IntegerTicksOnly = true,
            LabelFormatter = v => $"{Math.Pow(10, v):0.#}×",
        };
        plot.Axes.SetLimits(Math.Log10(0.5), Math.Log10(80), Math.Min(0, 100 * settings.Min(s => s.Kept)) - 2, 102);
        plot.XLabel("stored size: fp16 PEFT file / container (mean over the demo adapters, log scale)");
        plot.YLabel("kept % of the lossless improvement (worst demo adapter)");
        plot.Title("Demo adapters: quality kept vs compression ratio");
        plot.ShowLegend(Alignment.LowerLeft);
        plot.SavePng(path, 1100, 700);
    }

    /// <summary>The codec family of a setting, for colours: the setting without its numeric parameters.</summary>
    public static string Family(string setting)
    {
        if (setting is "lossless" or "fp16") return "lossless / fp16";
        if (setting.StartsWith("auto", StringComparison.Ordinal)) return "auto";
        var words = setting.Split(' ').Where(w => !w.StartsWith("d=", StringComparison.Ordinal) && !w.StartsWith("err=", StringComparison.Ordinal)
            && !w.StartsWith("int", StringComparison.Ordinal) && !w.StartsWith("e=", StringComparison.Ordinal)).ToList();
        if (setting.Contains(" e=", StringComparison.Ordinal)) words.Add("energy-truncated");
        if (setting.Contains(" int", StringComparison.Ordinal)) words.Add("k-bit");
        if (setting.Contains("err=", StringComparison.Ordinal)) words.Add("error target");
        return string.Join(' ', words);
    }
}
