namespace Serving.Checkpoints.RewardHeads;

/// <summary>What a reward head reads at its layer.</summary>
public enum RewardHeadInput
{
    /// <summary>The base model's final norm (with its weights) applied to the hidden state.</summary>
    FinalNorm,

    /// <summary>The raw residual stream.</summary>
    Hidden,
}

/// <summary>How per-position scores become the reward of a prefix.</summary>
public enum RewardPooling
{
    /// <summary>Running sum of the scores at positions 0..t.</summary>
    Sum,

    /// <summary>The score at position t.</summary>
    Last,

    /// <summary>Mean of the scores at positions 0..t.</summary>
    Mean,
}

/// <summary>Element-wise activation between the head's dense layers.</summary>
public enum RewardActivation
{
    Identity,
    Tanh,
    Relu,
    Gelu,
    Silu,
    Sigmoid,
}

/// <summary>One dense layer <c>y = W x + b</c>, W row-major [Out, In].</summary>
public sealed record DenseLayer(int In, int Out, float[] Weight, float[]? Bias);

/// <summary>
/// An Otter-style reward head on a frozen base, as <c>config.json</c> + <c>head.safetensors</c> describe it (the format
/// of <c>models/demo/reward-head</c>): at <see cref="Layer"/> (0 = the embedding output, l = the residual stream after
/// block l) each position's hidden state, optionally through the base's final norm, goes through a small MLP to one
/// score; <see cref="Pooling"/> turns scores into the reward of every prefix. Validated by <see cref="RewardHeadReader"/>.
/// </summary>
public sealed record RewardHeadDefinition
{
    /// <summary>The base model the head was trained on (<c>base_model</c>), if the file says.</summary>
    public string? BaseModel { get; init; }

    /// <summary>Hidden state read: 0 = embedding output, l = after block l.</summary>
    public required int Layer { get; init; }

    public required RewardHeadInput Input { get; init; }

    public required RewardPooling Pooling { get; init; }

    /// <summary>Applied after every layer but the last.</summary>
    public required RewardActivation Activation { get; init; }

    /// <summary>The MLP: first In = the base's hidden size, last Out = 1.</summary>
    public required IReadOnlyList<DenseLayer> Layers { get; init; }

    /// <summary>What the reward means (<c>label</c>), for listings.</summary>
    public string? Label { get; init; }

    /// <summary>Parameters of the head.</summary>
    public long Parameters
    {
        get
        {
            long n = 0;
            foreach (var l in Layers) n += l.Weight.Length + (l.Bias?.Length ?? 0);
            return n;
        }
    }
}
