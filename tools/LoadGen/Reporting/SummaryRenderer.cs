using System.Globalization;
using Serving.LoadGen.Metrics;
using Spectre.Console;

namespace Serving.LoadGen.Reporting;

/// <summary>Renders results as Spectre.Console tables.</summary>
public static class SummaryRenderer
{
    /// <summary>Writes the summary of every point, and a sweep table when there are several.</summary>
    public static void Render(IAnsiConsole console, ResultDocument document)
    {
        foreach (SweepPointResult point in document.Points)
        {
            RenderPoint(console, point);
        }

        if (document.Points.Count > 1)
        {
            var sweep = new Table().Title("[bold]Sweep[/]").AddColumns("point", "req/s", "out tok/s", "TTFT p50", "TTFT p99", "TPOT p50", "E2E p99", "goodput", "failed");
            foreach (SweepPointResult p in document.Points)
            {
                RunMetrics m = p.Metrics;
                sweep.AddRow(Esc(p.Label), F(m.RequestThroughput), F(m.OutputTokenThroughput), F(m.TtftMs.P50), F(m.TtftMs.P99), F(m.TpotMs.P50), F(m.E2eMs.P99), m.Goodput is double g ? F(g) : "-", m.Failed.ToString(CultureInfo.InvariantCulture));
            }

            console.Write(sweep);
        }

        if (document.Interrupted)
        {
            console.MarkupLine("[yellow]Interrupted: the numbers cover what was measured before Ctrl+C.[/]");
        }
    }

    private static void RenderPoint(IAnsiConsole console, SweepPointResult point)
    {
        RunMetrics m = point.Metrics;
        var totals = new Table().Title($"[bold]{Esc(point.Label)}[/] ({point.Mode})").AddColumns("metric", "value");
        totals.AddRow("successful requests", I(m.Completed));
        totals.AddRow("failed requests", I(m.Failed));
        if (m.Cancelled > 0 || point.NotSent > 0)
        {
            totals.AddRow("cancelled / not sent", $"{I(m.Cancelled)} / {I(point.NotSent)}");
        }

        totals.AddRow("duration (s)", F(m.DurationSeconds));
        totals.AddRow("total input tokens", m.TotalInputTokens.ToString(CultureInfo.InvariantCulture));
        totals.AddRow("total output tokens", m.TotalOutputTokens.ToString(CultureInfo.InvariantCulture));
        totals.AddRow("request throughput (req/s)", F(m.RequestThroughput));
        totals.AddRow("output token throughput (tok/s)", F(m.OutputTokenThroughput));
        totals.AddRow("total token throughput (tok/s)", F(m.TotalTokenThroughput));
        if (m.Goodput is double goodput)
        {
            totals.AddRow("goodput (req/s)", F(goodput));
            totals.AddRow("SLO attainment", (m.SloAttainment ?? 0).ToString("P1", CultureInfo.InvariantCulture));
        }

        foreach ((string kind, int count) in m.Errors)
        {
            totals.AddRow($"errors: {Esc(kind)}", I(count));
        }

        if (m.Refused > 0)
        {
            totals.AddRow("429/503 without Retry-After", $"{I(m.RefusedWithoutRetryAfter)} of {I(m.Refused)}");
        }

        console.Write(totals);

        var latency = new Table().AddColumns("latency (ms)", "mean", "p50", "p90", "p99", "max", "n");
        foreach ((string name, Distribution d) in new[] { ("TTFT", m.TtftMs), ("TPOT", m.TpotMs), ("ITL", m.ItlMs), ("E2E", m.E2eMs) })
        {
            latency.AddRow(name, F(d.Mean), F(d.P50), F(d.P90), F(d.P99), F(d.Max), I(d.Count));
        }

        console.Write(latency);

        if (m.PerAdapter.Count > 0)
        {
            var adapters = new Table().Title($"top {m.PerAdapter.Count} adapters").AddColumns("adapter", "requests", "failed", "out tok/s", "TTFT p50", "TTFT p99", "TPOT p50", "E2E p50");
            foreach (AdapterMetrics a in m.PerAdapter)
            {
                adapters.AddRow(Esc(a.Adapter), I(a.Requests), I(a.Failed), F(a.OutputTokenThroughput), F(a.TtftMs.P50), F(a.TtftMs.P99), F(a.TpotMs.P50), F(a.E2eMs.P50));
            }

            console.Write(adapters);
        }
    }

    private static string F(double v) => v.ToString("0.00", CultureInfo.InvariantCulture);

    private static string I(int v) => v.ToString(CultureInfo.InvariantCulture);

    private static string Esc(string s) => Markup.Escape(s);
}
