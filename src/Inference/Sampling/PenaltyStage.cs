namespace Serving.Inference.Sampling;

/// <summary>
/// Pipeline stage 1: repetition, frequency and presence penalties (vLLM's), applied in place to a copy of the raw
/// logits. Repetition divides positive / multiplies negative logits of every token seen in the prompt or the output;
/// frequency (− f × count) and presence (− p once) apply to generated tokens only. The state (seen tokens, output
/// counts) is vocabulary-sized, allocated once, and copied on <see cref="Clone"/> for forks.
/// </summary>
internal sealed class PenaltyStage
{
    private readonly float _repetition;
    private readonly float _presence;
    private readonly float _frequency;
    private readonly int[] _counts;
    private readonly bool[] _seen;
    private readonly int[] _seenIds;
    private readonly int[] _outputIds;
    private int _seenCount;
    private int _outputCount;

    /// <summary>Null when <paramref name="parameters"/> has no active penalty (the stage would change nothing).</summary>
    public static PenaltyStage? Create(SamplingParameters parameters, int vocabSize, ReadOnlySpan<int> promptTokens) =>
        parameters.HasPenalties ? new PenaltyStage(parameters, vocabSize, promptTokens) : null;

    private PenaltyStage(SamplingParameters p, int vocabSize, ReadOnlySpan<int> promptTokens)
    {
        _repetition = p.RepetitionPenalty;
        _presence = p.PresencePenalty;
        _frequency = p.FrequencyPenalty;
        _counts = new int[vocabSize];
        _seen = new bool[vocabSize];
        _seenIds = new int[vocabSize];
        _outputIds = new int[vocabSize];
        foreach (var token in promptTokens) MarkSeen(token);
    }

    private PenaltyStage(PenaltyStage parent)
    {
        _repetition = parent._repetition;
        _presence = parent._presence;
        _frequency = parent._frequency;
        _counts = (int[])parent._counts.Clone();
        _seen = (bool[])parent._seen.Clone();
        _seenIds = (int[])parent._seenIds.Clone();
        _outputIds = (int[])parent._outputIds.Clone();
        _seenCount = parent._seenCount;
        _outputCount = parent._outputCount;
    }

    /// <summary>An independent copy with the same history.</summary>
    public PenaltyStage Clone() => new(this);

    /// <summary>Applies the penalties in place.</summary>
    public void Apply(Span<float> logits)
    {
        if (_repetition != 1f)
        {
            var r = _repetition;
            for (var i = 0; i < _seenCount; i++)
            {
                var id = _seenIds[i];
                var x = logits[id];
                logits[id] = x > 0f ? x / r : x * r;
            }
        }
        if (_frequency != 0f || _presence != 0f)
        {
            for (var i = 0; i < _outputCount; i++)
            {
                var id = _outputIds[i];
                logits[id] -= _frequency * _counts[id];
                logits[id] -= _presence;
            }
        }
    }

    /// <summary>Records a generated token (a valid id).</summary>
    public void Accept(int token)
    {
        if (_counts[token]++ == 0) _outputIds[_outputCount++] = token;
        MarkSeen(token);
    }

    private void MarkSeen(int token)
    {
        if (!_seen[token])
        {
            _seen[token] = true;
            _seenIds[_seenCount++] = token;
        }
    }
}
