using System.Globalization;
using Serving.AdapterStore.Compression;

namespace Serving.AdapterQuality;

/// <summary>
/// A row of the table: <c>lossless</c> (the fp32 original), <c>fp16</c> (the factors rounded to fp16, stored
/// losslessly), <c>auto[:kept]</c>, or a codec setting in words, e.g. <c>quant svd err=0.3</c>, <c>quant factors int4</c>,
/// <c>compeft d=0.1</c>, <c>compeft svd d=0.3 per-tensor alpha=component mag=2</c>.
/// </summary>
internal static class Settings
{
    public static CodecOptions Parse(string text)
    {
        var words = text.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var codec = words[0] switch
        {
            "lossless" or "fp16" => AdapterCodec.Lossless,
            "quant" => AdapterCodec.Quant,
            "compeft" => AdapterCodec.ComPeft,
            "auto" => AdapterCodec.Auto,
            _ => throw new ArgumentException($"unknown codec in '{text}'"),
        };
        var q = new QuantOptions();
        var c = new ComPeftOptions();
        var a = new AutoOptions();
        foreach (var w in words.Skip(1))
        {
            var (key, value) = w.Contains('=') ? (w[..w.IndexOf('=')], w[(w.IndexOf('=') + 1)..]) : (w, "");
            double D() => double.Parse(value, CultureInfo.InvariantCulture);
            switch (key)
            {
                case "svd": q = q with { Basis = FactorBasis.Svd }; c = c with { Basis = FactorBasis.Svd }; break;
                case "factors": q = q with { Basis = FactorBasis.Factors }; c = c with { Basis = FactorBasis.Factors }; break;
                case "e": q = q with { Energy = D() }; c = c with { Energy = D() }; break;
                case "err": q = q with { TargetError = D() }; break;
                case "global": q = q with { Budget = BudgetScope.Global }; break;
                case "w": q = q with { DropWeight = D() }; break;
                case "d": c = c with { Density = D() }; break;
                case "f": c = c with { Factor = D() }; break;
                case "per-tensor": c = c with { Scope = ThresholdScope.PerTensor }; break;
                case "alpha": c = c with { Alpha = Enum.Parse<AlphaMode>(value, ignoreCase: true) }; break;
                case "mag": c = c with { MagnitudeBits = int.Parse(value, CultureInfo.InvariantCulture) }; break;
                case "kept": a = a with { MinKept = D() }; break;
                default:
                    if (key.StartsWith("int", StringComparison.Ordinal)) q = q with { Bits = int.Parse(key[3..], CultureInfo.InvariantCulture) };
                    else throw new ArgumentException($"unknown word '{w}' in '{text}'");
                    break;
            }
        }
        return new CodecOptions { Codec = codec, Quant = q, ComPeft = c, Auto = a };
    }
}
