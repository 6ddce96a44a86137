using System.Globalization;
using System.Text;
using Serving.LoadGen.Metrics;

namespace Serving.LoadGen.Reporting;

/// <summary>The human-readable result lines BENCHMARKS.md asks every benchmark to append to a results document.</summary>
public static class MarkdownLog
{
    /// <summary>One bullet per point, with the machine and the exact command.</summary>
    public static string Format(ResultDocument document, string resultPath)
    {
        var sb = new StringBuilder();
        MachineInfo m = document.Machine;
        sb.Append(CultureInfo.InvariantCulture, $"- {document.StartedUtc[..16]}Z, {m.Cores} cores {m.Cpu}, `{document.Command}` → {resultPath}{(document.Interrupted ? " (interrupted)" : "")}\n");
        foreach (SweepPointResult p in document.Points)
        {
            RunMetrics r = p.Metrics;
            sb.Append(CultureInfo.InvariantCulture,
                $"  - {p.Label}: {r.Completed}/{r.Requests} ok, {r.RequestThroughput:0.00} req/s, {r.OutputTokenThroughput:0.0} out tok/s, TTFT p50/p99 {r.TtftMs.P50:0.0}/{r.TtftMs.P99:0.0} ms, TPOT p50 {r.TpotMs.P50:0.0} ms, ITL p50 {r.ItlMs.P50:0.0} ms, E2E p50/p99 {r.E2eMs.P50:0}/{r.E2eMs.P99:0} ms");
            if (r.Goodput is double g)
            {
                sb.Append(CultureInfo.InvariantCulture, $", goodput {g:0.00} req/s ({r.SloAttainment:P0})");
            }

            if (r.Failed > 0)
            {
                sb.Append(CultureInfo.InvariantCulture, $", errors {string.Join(' ', r.Errors.Select(e => $"{e.Key}={e.Value}"))}");
            }

            sb.Append('\n');
        }

        return sb.ToString();
    }
}
