using Serving.Inference.Output;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;

namespace Serving.Inference.Decoding;

/// <summary>
/// One answer being generated on one row: its sampler and output. Without a reward head a sampled token is appended at
/// once; with one, the token is fed first and appended at the next logits, when the head's in-pass reward of the prefix
/// ending with it is known (so every reported reward covers the token it is reported with; a finished answer's reward
/// covers all its tokens, a final stop token included). That costs one step of streaming latency and one step after
/// the last token, only for scored requests.
/// </summary>
internal sealed class ChoiceRun(TokenSampler sampler, RowOutput output, GenerationHandle handle, bool scored, bool tokenRewards)
{
    private int _pending = -1;
    private float _pendingLogprob;

    public TokenSampler Sampler { get; } = sampler;

    public RowOutput Output { get; } = output;

    /// <summary>Whether completion tokens count towards the request's usage as they are appended (false for buffered candidates).</summary>
    public bool CountsAsCompletion { get; init; } = true;

    /// <summary>The reward of the finished answer (NaN without a head, or before it finished).</summary>
    public float FinalReward { get; private set; } = float.NaN;

    public bool Finished => Output.Finished;

    /// <summary>
    /// The row's logits arrived: appends the token that waited for its score, then samples the next one. Returns true
    /// when the answer finished (the row is released).
    /// </summary>
    public bool Step(IDecodingContext context, DecodingRow row, ReadOnlySpan<float> logits, bool wantLogprob)
    {
        if (Settle(context, row)) return true;
        float logprob = 0f;
        var token = wantLogprob ? Sampler.Sample(logits, out logprob) : Sampler.Sample(logits);
        return Take(context, row, token, logprob);
    }

    /// <summary>Keeps <paramref name="token"/> (chosen by the sampler or by a strategy) as the answer's next token.</summary>
    public bool Take(IDecodingContext context, DecodingRow row, int token, float logprob)
    {
        Sampler.Accept(token);
        handle.AddGeneratedTokens(1);
        if (scored && row.Length < context.MaxContext)
        {
            _pending = token;
            _pendingLogprob = logprob;
            context.Feed(row, token);
            return false;
        }
        var reward = scored ? row.Reward : (float?)null;
        return Append(context, row, token, logprob, reward);
    }

    /// <summary>Appends the token that waited for its score (if any) with the reward the step computed; true when that ended the answer.</summary>
    public bool Settle(IDecodingContext context, DecodingRow row)
    {
        if (_pending < 0) return false;
        var token = _pending;
        _pending = -1;
        return Append(context, row, token, _pendingLogprob, row.Reward);
    }

    /// <summary>
    /// Keeps <paramref name="token"/>, which <paramref name="row"/> was already fed and scored (<paramref name="reward"/>:
    /// the reward of the prefix ending with it), e.g. the candidate a reward-guided search chose.
    /// </summary>
    public bool Commit(IDecodingContext context, DecodingRow row, int token, float logprob, float reward)
    {
        Sampler.Accept(token);
        handle.AddGeneratedTokens(1);
        return Append(context, row, token, logprob, reward);
    }

    private bool Append(IDecodingContext context, DecodingRow row, int token, float logprob, float? reward)
    {
        if (CountsAsCompletion) handle.AddCompletionTokens(1);
        var finish = Output.Append(token, logprob, Sampler, contextFull: row.Length >= context.MaxContext, tokenRewards ? reward : null);
        if (finish is not FinishReason reason)
        {
            if (!scored) context.Feed(row, token);
            return false;
        }
        FinalReward = reward ?? float.NaN;
        Output.Finish(reason, reward);
        context.Release(row);
        return true;
    }

    /// <summary>Ends the answer early (the pending token, if any, is dropped).</summary>
    public void Abort()
    {
        if (!Output.Finished) Output.Finish(FinishReason.Abort);
    }
}
