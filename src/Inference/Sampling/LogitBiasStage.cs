namespace Serving.Inference.Sampling;

/// <summary>
/// Pipeline stage 2: OpenAI's <c>logit_bias</c>, a fixed value added to the logits of named tokens (after the
/// penalties, before temperature). Immutable, shared by forks.
/// </summary>
internal sealed class LogitBiasStage
{
    private readonly int[] _ids;
    private readonly float[] _bias;

    private LogitBiasStage(IReadOnlyDictionary<int, float> bias)
    {
        _ids = new int[bias.Count];
        _bias = new float[bias.Count];
        var i = 0;
        foreach (var (id, value) in bias)
        {
            _ids[i] = id;
            _bias[i++] = value;
        }
    }

    /// <summary>Null when there is nothing to add.</summary>
    public static LogitBiasStage? Create(SamplingParameters parameters) =>
        parameters.LogitBias is { Count: > 0 } bias ? new LogitBiasStage(bias) : null;

    /// <summary>Adds the biases in place.</summary>
    public void Apply(Span<float> logits)
    {
        for (var i = 0; i < _ids.Length; i++) logits[_ids[i]] += _bias[i];
    }
}
