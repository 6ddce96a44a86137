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

    /// <summary>False once released.</summary>
    public bool IsActive { get; internal set; } = true;
}
