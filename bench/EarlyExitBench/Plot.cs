namespace Serving.Bench;

/// <summary>The sweep as a PNG: top-1 agreement vs layers skipped, one line per criterion.</summary>
internal static class Plot
{
    public static void AgreementVsSkipped(IReadOnlyList<(string Name, double Skipped, double Agreement)> points, string path)
    {
        var plot = new ScottPlot.Plot();
        foreach (var group in points.GroupBy(p => p.Name))
        {
            var ordered = group.OrderBy(p => p.Skipped).ToArray();
            var line = plot.Add.Scatter(ordered.Select(p => p.Skipped * 100).ToArray(), ordered.Select(p => p.Agreement * 100).ToArray());
            line.LegendText = group.Key;
        }
        var target = plot.Add.HorizontalLine(95);
        target.LegendText = "95% agreement";
        var skipped = plot.Add.VerticalLine(30);
        skipped.LegendText = "30% skipped (issue 13 target)";
        var geva = plot.Add.Scatter(new[] { 21.0 }, new[] { 94.9 });
        geva.LegendText = "Geva et al. (16-layer LM)";
        plot.Title("Demo model: top-1 agreement vs layers skipped (test split, teacher-forced)");
        plot.XLabel("layers skipped (%)");
        plot.YLabel("top-1 agreement with full depth (%)");
        plot.ShowLegend();
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        plot.SavePng(path, 900, 600);
        Console.WriteLine($"wrote {path}");
    }
}
