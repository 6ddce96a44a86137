namespace Serving.Inference.Sampling;

/// <summary>Why a sequence stopped generating.</summary>
public enum FinishReason
{
    /// <summary>End-of-sequence token, a stop token id or a stop string.</summary>
    Stop,
    /// <summary><see cref="SamplingParameters.MaxTokens"/> or the context length was reached.</summary>
    Length,
    /// <summary>The client cancelled or the deadline passed.</summary>
    Abort,
}

/// <summary>Wire names for <see cref="FinishReason"/>.</summary>
public static class FinishReasonExtensions
{
    /// <summary>The OpenAI <c>finish_reason</c> string ("abort" as vLLM reports it).</summary>
    public static string ToOpenAIString(this FinishReason reason) => reason switch
    {
        FinishReason.Stop => "stop",
        FinishReason.Length => "length",
        FinishReason.Abort => "abort",
        _ => throw new ArgumentOutOfRangeException(nameof(reason), reason, null),
    };
}
