namespace Serving.Inference.Sampling;

/// <summary>A sampling parameter is out of range; <see cref="Param"/> is the OpenAI request field name.</summary>
public sealed class SamplingParameterException : Exception
{
    /// <summary>Creates the exception for the OpenAI parameter <paramref name="param"/>.</summary>
    public SamplingParameterException(string param, string message) : base(message) => Param = param;

    /// <summary>OpenAI request field that is invalid, e.g. <c>"top_p"</c>; goes to the error JSON's <c>param</c>.</summary>
    public string Param { get; }
}
