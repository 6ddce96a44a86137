using Serving.Inference.Engine;

namespace Serving.Inference.Decoding;

/// <summary>
/// One KV row of a request as its strategy sees it. The scheduler owns the row's sequence and prefill progress; the
/// strategy may tag it (e.g. with a choice index) and reads its length and reward.
/// </summary>
public sealed class DecodingRow
{
    internal DecodingRow(Sequence sequence) => Sequence = sequence;

    internal Sequence Sequence { get; set; }

    /// <summary>A strategy's own index for this row (e.g. its choice or beam).</summary>
    public int Tag { get; set; }

    /// <summary>Tokens in the row's KV cache.</summary>
    public int Length => Sequence.Length;

    /// <summary>The reward head's reward of the row's cached tokens (NaN without a head).</summary>
    public float Reward => Sequence.Reward;

    /// <summary>The reward of the cached prefix extended by one position whose head score is <paramref name="score"/>.</summary>
    public float RewardWith(float score) => Sequence.RewardHead is { } head ? Sequence.RewardState.ValueWith(score, head.Pooling) : float.NaN;

    /// <summary>The row's last token fed (or the next prompt token while prefilling); -1 when none is pending.</summary>
    public int PendingToken => Sequence.PendingToken;

    /// <summary>False once released.</summary>
    public bool IsActive => !Released && Sequence.IsActive;

    internal bool Released { get; set; }

    /// <summary>The request the row belongs to (scheduler-owned).</summary>
    internal Scheduling.ScheduledRequest? Request { get; set; }

    // Prefill progress of the row's prompt (scheduler-owned).
    internal int[]? Prompt { get; set; }
    internal int PromptOffset { get; set; }
    internal bool LastPromptTokenPending { get; set; }
    internal bool Prefilling => Prompt is not null;

    /// <summary>The prompt the row's cache starts with (kept after prefill, copied to forks): what prefix reuse compares.</summary>
    internal int[]? CachedPrompt { get; set; }
}
