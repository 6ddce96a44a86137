namespace Serving.Inference.Sampling;

/// <summary>
/// Token-level end of generation for one request: end-of-sequence ids (unless <see cref="SamplingParameters.IgnoreEos"/>),
/// <see cref="SamplingParameters.StopTokenIds"/> and <see cref="SamplingParameters.MaxTokens"/>. Stop strings are
/// text-level and handled by <see cref="StopStringMatcher"/>. A stop token ends generation and is not emitted as text.
/// </summary>
public sealed class StopCriteria
{
    private readonly int[] _stopIds;
    private readonly int _maxTokens;

    /// <summary>Builds the criteria from validated parameters and the model's end-of-sequence ids.</summary>
    public StopCriteria(SamplingParameters parameters, ReadOnlySpan<int> eosTokenIds)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        int eosCount = parameters.IgnoreEos ? 0 : eosTokenIds.Length;
        _stopIds = new int[parameters.StopTokenIds.Count + eosCount];
        for (int i = 0; i < parameters.StopTokenIds.Count; i++)
        {
            _stopIds[i] = parameters.StopTokenIds[i];
        }
        if (eosCount > 0)
        {
            eosTokenIds.CopyTo(_stopIds.AsSpan(parameters.StopTokenIds.Count));
        }
        _maxTokens = parameters.MaxTokens;
    }

    /// <summary>True if <paramref name="token"/> ends generation (a stop id, or EOS when not ignored).</summary>
    public bool IsStopToken(int token) => Array.IndexOf(_stopIds, token) >= 0;

    /// <summary>
    /// Call after accepting a token, with the number generated so far including it. A stop token wins over the
    /// length limit when both apply (vLLM's order); null means keep going.
    /// </summary>
    public FinishReason? Check(int token, int generatedCount)
    {
        if (IsStopToken(token))
        {
            return FinishReason.Stop;
        }
        return generatedCount >= _maxTokens ? FinishReason.Length : null;
    }
}
