using System.Globalization;
using System.Text;
using Serving.AdapterStore.Compression;

namespace Serving.AdapterQuality;

/// <summary>
/// The proxy's calibration: per adapter, the noise cost b in lost = aligned·a + noise·b (least squares over its quant
/// rows with a = <see cref="AutoCodec.SignalCost"/>, and the largest single-row value), the envelope the auto codec
/// uses, predicted vs measured kept for every row, and the headline numbers (auto's ratio and worst kept, the front).
/// </summary>
internal static class Calibration
{
    public static string Summary(IReadOnlyList<QualityRow> rows)
    {
        var sb = new StringBuilder();
        var lossy = rows.Where(r => r.Setting is not ("lossless" or "fp16")).ToList();
        sb.AppendLine("| adapter | noise cost b, least squares (quant rows) | largest (lost − a·aligned) / noise | signal cost, largest (lost − b_env·noise) / aligned (aligned ≥ 0.01) |");
        sb.AppendLine("|---|---|---|---|");
        foreach (var g in lossy.GroupBy(r => r.Adapter))
        {
            var quant = g.Where(r => r.Setting.StartsWith("quant", StringComparison.Ordinal) && r.ProxyNoise > 0.005 && 1 - r.Kept < 0.5).ToList();
            double num = quant.Sum(r => (1 - r.Kept - AutoCodec.SignalCost * r.ProxyAligned) * r.ProxyNoise), den = quant.Sum(r => r.ProxyNoise * r.ProxyNoise);
            double max = quant.Count == 0 ? double.NaN : quant.Max(r => (1 - r.Kept - AutoCodec.SignalCost * r.ProxyAligned) / r.ProxyNoise);
            var aligned = g.Where(r => r.ProxyAligned >= 0.01).ToList();
            double signal = aligned.Count == 0 ? double.NaN : aligned.Max(r => (1 - r.Kept - AutoCodec.NoiseCost * r.ProxyNoise) / r.ProxyAligned);
            sb.AppendLine(F($"| {g.Key} | {num / den:F3} | {max:F3} | {signal:F2} |"));
        }
        sb.AppendLine(F($"Envelope used by auto: signal cost {AutoCodec.SignalCost}, noise cost {AutoCodec.NoiseCost}."));
        var under = lossy.Where(r => r.Kept < AutoCodec.PredictKept(new ProxyError(r.ProxyAligned, r.ProxyNoise)) - 1e-9).ToList();
        sb.AppendLine(F($"Rows whose measured kept is below the prediction: {under.Count} of {lossy.Count}")
            + (under.Count == 0 ? "" : ": " + string.Join(", ", under.Select(r => F($"{r.Adapter} '{r.Setting}' measured {r.Kept:P1} predicted {AutoCodec.PredictKept(new ProxyError(r.ProxyAligned, r.ProxyNoise)):P1}")))));

        var auto = rows.Where(r => r.Setting.StartsWith("auto", StringComparison.Ordinal)).ToList();
        if (auto.Count > 0)
        {
            double generalShift = auto.Average(r => 100 * (r.General - rows.First(l => l.Adapter == r.Adapter && l.Setting == "lossless").General) / r.BaseGeneral);
            sb.AppendLine(F($"auto: mean ratio {auto.Average(r => r.Ratio):F1}× (min {auto.Min(r => r.Ratio):F1}×, max {auto.Max(r => r.Ratio):F1}×), kept min {auto.Min(r => r.Kept):P1}, mean {auto.Average(r => r.Kept):P1}, general loss vs lossless {generalShift:+0.00;-0.00}% of the base's (mean)"));
        }
        foreach (double target in new[] { 0.95, 0.9 })
        {
            // Per adapter, the largest ratio any setting reaches with kept ≥ target; and the best single setting over all adapters.
            var best = lossy.GroupBy(r => r.Adapter).Select(g => (g.Key, Best: g.Where(r => r.Kept >= target).OrderByDescending(r => r.Ratio).FirstOrDefault())).ToList();
            sb.AppendLine(F($"front at kept ≥ {target:P0}, per adapter: ") + string.Join(", ", best.Select(b => b.Best is null ? b.Key + " none" : F($"{b.Key} {b.Best.Ratio:F1}× ({b.Best.Setting})"))));
            var single = lossy.GroupBy(r => r.Setting).Where(g => g.All(r => r.Kept >= target)).OrderByDescending(g => g.Average(r => r.Ratio)).FirstOrDefault();
            if (single is not null) sb.AppendLine(F($"best single setting with kept ≥ {target:P0} on every adapter: '{single.Key}', mean ratio {single.Average(r => r.Ratio):F1}×"));
        }
        return sb.ToString();
    }

    private static string F(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
