namespace Serving.Inference.Node.OpenAI;

/// <summary>
/// A logprob as the wire carries it: JSON has no −∞, and a token an output constraint masked (or a −100 logit_bias)
/// has logprob −∞ after the mask. As vLLM's OpenAI layer does, such values are written as −9999.0.
/// </summary>
internal static class WireLogprob
{
    public const float Floor = -9999f;

    public static float Of(float logprob) => float.IsNaN(logprob) ? Floor : Math.Max(logprob, Floor);
}
