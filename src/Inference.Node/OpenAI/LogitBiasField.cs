using System.Globalization;

namespace Serving.Inference.Node.OpenAI;

/// <summary>
/// OpenAI's <c>logit_bias</c> (<c>{"50256": -100}</c>): keys are token ids written as decimal integers, values lie in
/// [-100, 100]. A key that is not an integer or a value out of range is a 400 naming <c>logit_bias</c>; ids outside the
/// vocabulary are refused by <see cref="Serving.Inference.Sampling.SamplingParameters.Validate"/>, which knows it.
/// </summary>
internal static class LogitBiasField
{
    /// <summary>The bias by token id, null when absent or empty.</summary>
    public static IReadOnlyDictionary<int, float>? Read(Dictionary<string, double>? bias)
    {
        if (bias is not { Count: > 0 }) return null;
        var result = new Dictionary<int, float>(bias.Count);
        foreach (var (key, value) in bias)
        {
            if (!int.TryParse(key, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var id))
            {
                throw Refusals.Invalid("logit_bias", $"logit_bias keys must be token ids (integers written as strings, e.g. \"50256\"), got \"{Shorten(key)}\".");
            }
            if (!(value >= -100 && value <= 100))
            {
                throw Refusals.Invalid("logit_bias", $"logit_bias[\"{key}\"] must be between -100 and 100, got {value.ToString(CultureInfo.InvariantCulture)}.");
            }
            if (!result.TryAdd(id, (float)value))
            {
                throw Refusals.Invalid("logit_bias", $"logit_bias names token id {id} twice (\"{Shorten(key)}\").");
            }
        }
        return result;
    }

    private static string Shorten(string key) => key.Length <= 32 ? key : key[..32] + "…";
}
