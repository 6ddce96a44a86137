using Serving.Inference.Engine;
using Serving.Inference.Sampling;

namespace Serving.Inference.Scheduling;

/// <summary>
/// What a request must satisfy before it is queued, each failure a <see cref="SamplingParameterException"/> naming the
/// OpenAI field: <c>model</c> (an adapter this node cannot hold), <c>prompt</c>, <c>max_tokens</c>, the sampling fields,
/// and whatever its decoding method checks (<c>n</c>, <c>alignment.*</c>).
/// </summary>
internal static class RequestChecks
{
    public static void Validate(GenerationRequest request, BatchDecoder decoder)
    {
        var vocab = decoder.Model.Config.VocabSize;
        var maxContext = decoder.Model.MaxContext;
        if (request.Adapter is { } adapter)
        {
            if (decoder.Adapters is null) throw new SamplingParameterException("model", "This node serves the base model only (it has no adapter slots).");
            try
            {
                decoder.Adapters.EnsureFits(adapter.Factors);
            }
            catch (ArgumentException e)
            {
                throw new SamplingParameterException("model", $"The adapter does not fit this node's slots: {e.Message}");
            }
        }
        var prompt = request.PromptTokens;
        if (prompt is null || prompt.Length == 0) throw new SamplingParameterException("prompt", "The prompt must contain at least one token.");
        foreach (var t in prompt)
        {
            if ((uint)t >= (uint)vocab) throw new SamplingParameterException("prompt", $"Token id {t} is outside the vocabulary [0, {vocab}).");
        }
        if (request.PromptLogprobs is int top && (top < 0 || top > SamplingParameters.MaxTopLogprobs))
        {
            throw new SamplingParameterException("logprobs", $"prompt logprobs take 0 to {SamplingParameters.MaxTopLogprobs} alternatives, got {top}.");
        }
        request.Decoding.Validate(request, decoder.Capacity);
        request.Sampling.Validate(vocab);
        if (prompt.Length >= maxContext)
        {
            throw new SamplingParameterException("prompt", $"The prompt has {prompt.Length} tokens; this model's context holds {maxContext} tokens including the output.");
        }
        if (prompt.Length + request.Sampling.MaxTokens > maxContext)
        {
            throw new SamplingParameterException("max_tokens",
                $"max_tokens is {request.Sampling.MaxTokens} but the prompt has {prompt.Length} tokens and the context holds {maxContext}; at most {maxContext - prompt.Length} can be generated.");
        }
    }
}
