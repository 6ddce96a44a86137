using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using Serving.AdapterStore;
using Serving.AdapterStore.Compression;

namespace Serving.AdapterQuality;

/// <summary>One (adapter, setting) measurement.</summary>
internal sealed record QualityRow(
    string Adapter, string Setting, string Chosen, long Bytes, double Ratio, double BaseLoss, double LosslessLoss, double Loss, double Kept,
    double BaseGeneral, double General, double MeanError, double MaxError, double OverallError, double ProxyAligned, double ProxyNoise, double EncodeMs)
{
    /// <summary>General-domain loss change against the base model, in percent.</summary>
    public double GeneralDelta => 100 * (General - BaseGeneral) / BaseGeneral;
}

internal static class Table
{
    public static readonly System.Text.Json.JsonSerializerOptions Json = new() { NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals };

    public static readonly string[] DefaultSettings =
    [
        "lossless", "fp16", "auto",
        "compeft d=0.1", "compeft d=0.2", "compeft d=0.3",
        "compeft d=0.1 per-tensor alpha=component", "compeft d=0.3 per-tensor alpha=component", "compeft d=0.5 per-tensor alpha=component",
        "compeft svd d=0.2 per-tensor alpha=component mag=2", "compeft svd d=0.3 per-tensor alpha=component mag=2", "compeft svd d=0.5 per-tensor alpha=component mag=2",
        "quant factors int8", "quant factors int4", "quant factors int3",
        "quant svd int4", "quant svd int3", "quant svd int2",
        "quant svd e=0.95 int4", "quant svd e=0.9 int4", "quant svd e=0.8 int4",
        "quant svd err=0.1", "quant svd err=0.15", "quant svd err=0.2", "quant svd err=0.25", "quant svd err=0.3", "quant svd err=0.4", "quant svd err=0.5",
        "quant svd err=0.2 global", "quant svd err=0.3 global", "quant svd err=0.4 global",
    ];

    /// <summary>The adapter as an fp16 safetensors file: 8-byte length, the uploaded JSON header, 2 bytes per parameter.</summary>
    public static long Fp16FileBytes(byte[] file, AdapterPayload payload) =>
        8 + (long)BinaryPrimitives.ReadUInt64LittleEndian(file) + 2 * payload.Tensors.Sum(t => t.ElementCount);

    public static (byte[] Container, string Label) Encode(AdapterPayload payload, string setting)
    {
        if (setting == "fp16")
        {
            var halves = payload.Tensors.Select(t => t with { Data = t.Data.Select(v => (float)(Half)v).ToArray(), SourceType = TensorElementType.F16 }).ToList();
            return (AdapterContainer.Encode(payload with { Tensors = halves }, new CodecOptions { Codec = AdapterCodec.Lossless }), "fp16 lossless");
        }
        var options = Settings.Parse(setting);
        if (options.Codec == AdapterCodec.Auto)
        {
            var choice = AutoCodec.Choose(payload, options.Auto);
            return (choice.Container, choice.Chosen.Describe() + string.Create(CultureInfo.InvariantCulture, $" (predicted {choice.PredictedKept:P0})"));
        }
        return (AdapterContainer.Encode(payload, options), options.Describe());
    }

    /// <summary>√(Σ‖ΔW − ΔŴ‖² / Σ‖ΔW‖²) over all modules.</summary>
    public static double OverallError(LoraAdapter original, LoraAdapter decoded)
    {
        double num = 0, den = 0;
        foreach (var (e, m) in ReconstructionError.Compute(original, decoded).Zip(original.Modules))
        {
            double n2 = ReconstructionError.SquaredNorm(m);
            num += e.Relative * e.Relative * n2;
            den += n2;
        }
        return den == 0 ? 0 : Math.Sqrt(num / den);
    }

    public static string Line(QualityRow r) => string.Create(CultureInfo.InvariantCulture,
        $"{r.Adapter,-11} {r.Setting,-50} {r.Bytes,9} B {r.Ratio,6:F1}x  loss {r.Loss:F4} (base {r.BaseLoss:F4}, lossless {r.LosslessLoss:F4})  kept {r.Kept,7:P1}  general {r.GeneralDelta,6:F2}%  err mean {r.MeanError:F3} max {r.MaxError:F3} all {r.OverallError:F3} aligned² {r.ProxyAligned:F4} noise² {r.ProxyNoise:F4}  {r.EncodeMs:F0} ms  [{r.Chosen}]");

    public static string Markdown(IReadOnlyList<QualityRow> rows)
    {
        var sb = new StringBuilder();
        sb.AppendLine("| adapter | setting | stored bytes | × vs fp16 file | own test loss | kept | general Δ vs base (vs lossless) | ΔW error mean / max |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|");
        foreach (var r in rows)
        {
            string setting = r.Setting == "auto" ? $"auto → {r.Chosen}" : r.Setting;
            sb.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"| {r.Adapter} | {setting} | {r.Bytes:N0} | {r.Ratio:F1} | {r.Loss:F4} | {100 * r.Kept:F1}% | {Math.Round(r.GeneralDelta, 2):+0.00;-0.00;0.00}% ({Math.Round(GeneralVsLossless(rows, r), 2):+0.00;-0.00;0.00}) | {r.MeanError:F3} / {r.MaxError:F3} |"));
        }
        return sb.ToString();
    }

    /// <summary>General-domain loss of the row minus that of the lossless adapter, in percent of the base's loss.</summary>
    public static double GeneralVsLossless(IReadOnlyList<QualityRow> rows, QualityRow r) =>
        100 * (r.General - rows.First(l => l.Adapter == r.Adapter && l.Setting == "lossless").General) / r.BaseGeneral;

    /// <summary>One line per setting over the adapters: ratio (mean, range), kept (worst, mean), general change against lossless (mean).</summary>
    public static string Summary(IReadOnlyList<QualityRow> rows)
    {
        var sb = new StringBuilder();
        sb.AppendLine("| setting | × vs fp16 file, mean (min–max) | kept, worst adapter / mean | general loss vs lossless adapter, mean | encode ms, median |");
        sb.AppendLine("|---|---|---|---|---|");
        foreach (var g in rows.GroupBy(r => r.Setting))
        {
            var encode = g.Select(r => r.EncodeMs).Order().ToList();
            sb.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"| {g.Key} | {g.Average(r => r.Ratio):F1} ({g.Min(r => r.Ratio):F1}–{g.Max(r => r.Ratio):F1}) | {100 * g.Min(r => r.Kept):F1}% / {100 * g.Average(r => r.Kept):F1}% | {Math.Round(g.Average(r => GeneralVsLossless(rows, r)), 2):+0.00;-0.00;0.00}% | {encode[encode.Count / 2]:F0} |"));
        }
        return sb.ToString();
    }
}
