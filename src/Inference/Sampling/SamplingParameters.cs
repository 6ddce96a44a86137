namespace Serving.Inference.Sampling;

/// <summary>
/// Per-request sampling settings, immutable once built. Defaults are OpenAI's; <see cref="Validate"/> checks
/// ranges and names the offending OpenAI field. Processing order is documented on <see cref="TokenSampler"/>.
/// </summary>
public sealed record SamplingParameters
{
    /// <summary>Most <see cref="TopLogprobs"/> OpenAI allows.</summary>
    public const int MaxTopLogprobs = 20;

    /// <summary>Below this temperature sampling is greedy (vLLM's epsilon): dividing by it would overflow.</summary>
    public const float GreedyTemperature = 1e-5f;

    /// <summary>Softmax temperature in [0, 2]; 0 means greedy (argmax, ties to the lowest id).</summary>
    public float Temperature { get; init; } = 1f;

    /// <summary>Keep only the k most likely tokens (ties at the k-th value are kept, as in HF and vLLM); 0 or -1 = off.</summary>
    public int TopK { get; init; }

    /// <summary>Nucleus: keep the smallest set of most likely tokens whose probability sums to at least p; in (0, 1].</summary>
    public float TopP { get; init; } = 1f;

    /// <summary>Drop tokens whose probability is below <c>MinP × p_max</c>; in [0, 1].</summary>
    public float MinP { get; init; }

    /// <summary>HF/vLLM repetition penalty (&gt; 0) for tokens seen in prompt or output: positive logits are divided by it, negative ones multiplied.</summary>
    public float RepetitionPenalty { get; init; } = 1f;

    /// <summary>OpenAI presence penalty in [-2, 2], subtracted once from every token already generated.</summary>
    public float PresencePenalty { get; init; }

    /// <summary>OpenAI frequency penalty in [-2, 2], subtracted once per earlier occurrence in the generated tokens.</summary>
    public float FrequencyPenalty { get; init; }

    /// <summary>Seed for reproducible sampling; null draws a random one.</summary>
    public ulong? Seed { get; init; }

    /// <summary>Most tokens to generate (OpenAI's default for completions is 16; the node sets the chat default).</summary>
    public int MaxTokens { get; init; } = 16;

    /// <summary>Token ids that end generation (the token itself is not emitted as text).</summary>
    public IReadOnlyList<int> StopTokenIds { get; init; } = [];

    /// <summary>Strings that end generation; the output is truncated before the match, as in OpenAI.</summary>
    public IReadOnlyList<string> StopStrings { get; init; } = [];

    /// <summary>Keep generating past the model's end-of-sequence token (stop token ids still apply).</summary>
    public bool IgnoreEos { get; init; }

    /// <summary>
    /// OpenAI's <c>logit_bias</c>: a value in [-100, 100] added to the logit of each named token id after the penalties
    /// (-100 in practice bans a token, 100 forces it). Null or empty: none.
    /// </summary>
    public IReadOnlyDictionary<int, float>? LogitBias { get; init; }

    /// <summary>Number of top alternatives per token in [0, 20]; null = no logprobs requested.</summary>
    public int? TopLogprobs { get; init; }

    /// <summary>True when temperature is low enough to mean argmax.</summary>
    public bool IsGreedy => Temperature < GreedyTemperature;

    /// <summary>True when any of the three penalties changes logits.</summary>
    public bool HasPenalties => RepetitionPenalty != 1f || PresencePenalty != 0f || FrequencyPenalty != 0f;

    /// <summary>
    /// Throws <see cref="SamplingParameterException"/> naming the OpenAI field (<c>temperature</c>, <c>top_p</c>,
    /// <c>top_k</c>, <c>min_p</c>, <c>repetition_penalty</c>, <c>presence_penalty</c>, <c>frequency_penalty</c>,
    /// <c>max_tokens</c>, <c>stop</c>, <c>stop_token_ids</c>, <c>top_logprobs</c>, <c>logit_bias</c>) for the first invalid value.
    /// </summary>
    public void Validate(int vocabSize)
    {
        if (vocabSize <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(vocabSize), vocabSize, "Vocabulary size must be positive.");
        }

        // Comparisons are written so that NaN fails them.
        if (!(Temperature >= 0f && Temperature <= 2f))
        {
            throw new SamplingParameterException("temperature", $"temperature must be between 0 and 2, got {Temperature}.");
        }
        if (!(TopP > 0f && TopP <= 1f))
        {
            throw new SamplingParameterException("top_p", $"top_p must be in (0, 1], got {TopP}.");
        }
        if (TopK < -1)
        {
            throw new SamplingParameterException("top_k", $"top_k must be -1 or 0 (off) or at least 1, got {TopK}.");
        }
        if (!(MinP >= 0f && MinP <= 1f))
        {
            throw new SamplingParameterException("min_p", $"min_p must be in [0, 1], got {MinP}.");
        }
        if (!(RepetitionPenalty > 0f && float.IsFinite(RepetitionPenalty)))
        {
            throw new SamplingParameterException("repetition_penalty", $"repetition_penalty must be a finite number greater than 0, got {RepetitionPenalty}.");
        }
        if (!(PresencePenalty >= -2f && PresencePenalty <= 2f))
        {
            throw new SamplingParameterException("presence_penalty", $"presence_penalty must be between -2 and 2, got {PresencePenalty}.");
        }
        if (!(FrequencyPenalty >= -2f && FrequencyPenalty <= 2f))
        {
            throw new SamplingParameterException("frequency_penalty", $"frequency_penalty must be between -2 and 2, got {FrequencyPenalty}.");
        }
        if (MaxTokens < 1)
        {
            throw new SamplingParameterException("max_tokens", $"max_tokens must be at least 1, got {MaxTokens}.");
        }
        if (TopLogprobs is int n && (n < 0 || n > MaxTopLogprobs))
        {
            throw new SamplingParameterException("top_logprobs", $"top_logprobs must be between 0 and {MaxTopLogprobs}, got {n}.");
        }
        if (StopStrings is null)
        {
            throw new SamplingParameterException("stop", "stop must not be null.");
        }
        for (int i = 0; i < StopStrings.Count; i++)
        {
            if (string.IsNullOrEmpty(StopStrings[i]))
            {
                throw new SamplingParameterException("stop", $"stop[{i}] must be a non-empty string.");
            }
        }
        if (LogitBias is not null)
        {
            foreach (var (id, bias) in LogitBias)
            {
                if ((uint)id >= (uint)vocabSize)
                {
                    throw new SamplingParameterException("logit_bias", $"logit_bias names token id {id}, which is outside the vocabulary [0, {vocabSize}).");
                }
                if (!(bias >= -100f && bias <= 100f))
                {
                    throw new SamplingParameterException("logit_bias", $"logit_bias[{id}] must be between -100 and 100, got {bias}.");
                }
            }
        }
        if (StopTokenIds is null)
        {
            throw new SamplingParameterException("stop_token_ids", "stop_token_ids must not be null.");
        }
        for (int i = 0; i < StopTokenIds.Count; i++)
        {
            if ((uint)StopTokenIds[i] >= (uint)vocabSize)
            {
                throw new SamplingParameterException("stop_token_ids", $"stop_token_ids[{i}] = {StopTokenIds[i]} is outside the vocabulary [0, {vocabSize}).");
            }
        }
    }
}
