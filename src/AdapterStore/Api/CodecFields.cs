using System.Globalization;
using Serving.AdapterStore.Compression;
using Serving.AdapterStore.Peft;

namespace Serving.AdapterStore.Api;

/// <summary>
/// The upload form's codec fields (docs/adapter-store.md, "Upload"): <c>codec</c> = <c>auto</c> (default) |
/// <c>quant</c> | <c>compeft</c> | <c>lossless</c>, and the parameters of that codec. A parameter of another codec is
/// refused rather than ignored, so an old client sending <c>density</c> alone learns that it now needs
/// <c>codec=compeft</c>.
/// </summary>
internal static class CodecFields
{
    private static readonly string[] AutoFields = ["min_kept"];
    private static readonly string[] QuantFields = ["target_error", "bits", "basis", "energy", "budget"];
    private static readonly string[] ComPeftFields = ["density", "factor", "scope", "alpha", "magnitude_bits", "basis", "energy"];

    public static CodecOptions Parse(IReadOnlyDictionary<string, string> fields)
    {
        string name = fields.TryGetValue("codec", out var c) ? c.Trim().ToLowerInvariant() : "auto";
        var (codec, allowed) = name switch
        {
            "auto" => (AdapterCodec.Auto, AutoFields),
            "quant" => (AdapterCodec.Quant, QuantFields),
            "compeft" => (AdapterCodec.ComPeft, ComPeftFields),
            "lossless" => (AdapterCodec.Lossless, Array.Empty<string>()),
            _ => throw Invalid($"codec '{c}' is unknown; use 'auto' (default), 'quant', 'compeft' or 'lossless'."),
        };
        foreach (var field in AutoFields.Concat(QuantFields).Concat(ComPeftFields).Distinct())
        {
            if (fields.ContainsKey(field) && !allowed.Contains(field))
                throw Invalid($"'{field}' does not apply to codec={name}; it belongs to codec={Owner(field)}.");
        }
        var options = new CodecOptions { Codec = codec };
        options = codec switch
        {
            AdapterCodec.Auto => options with { Auto = new AutoOptions { MinKept = Double(fields, "min_kept", AutoOptions.DefaultMinKept) } },
            AdapterCodec.Quant => options with
            {
                Quant = new QuantOptions
                {
                    TargetError = Double(fields, "target_error", QuantOptions.DefaultTargetError),
                    Bits = Int(fields, "bits", 0),
                    Basis = Enum(fields, "basis", FactorBasis.Svd, ("svd", FactorBasis.Svd), ("factors", FactorBasis.Factors)),
                    Energy = Double(fields, "energy", 1),
                    Budget = Enum(fields, "budget", BudgetScope.PerModule, ("per_module", BudgetScope.PerModule), ("global", BudgetScope.Global)),
                },
            },
            AdapterCodec.ComPeft => options with
            {
                ComPeft = new ComPeftOptions
                {
                    Density = Double(fields, "density", ComPeftOptions.DefaultDensity),
                    Factor = Double(fields, "factor", ComPeftOptions.DefaultFactor),
                    Scope = Enum(fields, "scope", ThresholdScope.Global, ("global", ThresholdScope.Global), ("per_tensor", ThresholdScope.PerTensor)),
                    Alpha = Enum(fields, "alpha", AlphaMode.Sigma, ("sigma", AlphaMode.Sigma), ("tensor", AlphaMode.Tensor), ("component", AlphaMode.Component)),
                    MagnitudeBits = Int(fields, "magnitude_bits", 0),
                    Basis = Enum(fields, "basis", FactorBasis.Factors, ("factors", FactorBasis.Factors), ("svd", FactorBasis.Svd)),
                    Energy = Double(fields, "energy", 1),
                },
            },
            _ => options,
        };
        try
        {
            options.Validate();
        }
        catch (ArgumentException e)
        {
            throw Invalid(e.Message);
        }
        return options;
    }

    private static string Owner(string field) =>
        AutoFields.Contains(field) ? "auto" : QuantFields.Contains(field) && ComPeftFields.Contains(field) ? "quant or compeft" : QuantFields.Contains(field) ? "quant" : "compeft";

    private static double Double(IReadOnlyDictionary<string, string> fields, string field, double fallback)
    {
        if (!fields.TryGetValue(field, out var text)) return fallback;
        return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && double.IsFinite(v) ? v
            : throw Invalid($"'{field}' must be a number, got '{text}'.");
    }

    private static int Int(IReadOnlyDictionary<string, string> fields, string field, int fallback)
    {
        if (!fields.TryGetValue(field, out var text)) return fallback;
        return int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) ? v
            : throw Invalid($"'{field}' must be an integer, got '{text}'.");
    }

    private static T Enum<T>(IReadOnlyDictionary<string, string> fields, string field, T fallback, params (string Name, T Value)[] names)
    {
        if (!fields.TryGetValue(field, out var text)) return fallback;
        foreach (var (n, v) in names)
        {
            if (string.Equals(n, text.Trim(), StringComparison.OrdinalIgnoreCase)) return v;
        }
        throw Invalid($"{field} '{text}' is unknown; use {string.Join(" or ", names.Select(n => $"'{n.Name}'"))}.");
    }

    private static AdapterValidationException Invalid(string message) => new(AdapterErrors.CodecInvalid, message, status: 400);
}
