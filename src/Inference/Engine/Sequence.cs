namespace Serving.Inference.Engine;

/// <summary>
/// One row of a <see cref="BatchDecoder"/>: owns a KV slot until released. <see cref="Length"/> tokens are in the
/// cache; <see cref="PendingToken"/> is the token the next decode step feeds.
/// </summary>
public sealed class Sequence
{
    internal Sequence(long id, int slot)
    {
        Id = id;
        Slot = slot;
    }

    /// <summary>Unique within its decoder.</summary>
    public long Id { get; }

    /// <summary>The row this sequence occupies in a decode step (slots are kept contiguous, so it can change on release).</summary>
    public int Slot { get; internal set; }

    /// <summary>Tokens whose keys and values are cached.</summary>
    public int Length { get; internal set; }

    /// <summary>The next token to feed (set by the caller after sampling).</summary>
    public int PendingToken { get; set; } = -1;

    /// <summary>The adapter slot this row uses (see <see cref="BatchDecoder.SetAdapter"/>), or -1 for the base model.</summary>
    public int AdapterSlot { get; internal set; } = -1;

    /// <summary>The reward head scoring this row (null: none), set before its first token with <see cref="BatchDecoder.SetRewardHead"/>.</summary>
    public Rewards.RewardHead? RewardHead { get; internal set; }

    /// <summary>The pooled scores of every cached token (when a head scores the row).</summary>
    internal Rewards.RewardState RewardState;

    /// <summary>The head's reward of the cached tokens (the prefix up to the last token fed); NaN without a head.</summary>
    public float Reward => RewardHead is { } head ? RewardState.Value(head.Pooling) : float.NaN;

    /// <summary>The row's early-exit setting (null: every token runs every layer), set with <see cref="BatchDecoder.SetExitPolicy"/>.</summary>
    public EarlyExit.ExitPolicy? Exit { get; internal set; }

    /// <summary>Blocks the last decoded token ran (the model's layer count without an exit).</summary>
    public int LastLayers { get; internal set; }

    /// <summary>Blocks run over every decoded token of the row (the layers-per-token average is this over the tokens decoded).</summary>
    public long LayersRun { get; internal set; }

    /// <summary>Tokens decoded (decode steps, not prefill) of the row.</summary>
    public long TokensDecoded { get; internal set; }

    /// <summary>False once released.</summary>
    public bool IsActive { get; internal set; } = true;
}
