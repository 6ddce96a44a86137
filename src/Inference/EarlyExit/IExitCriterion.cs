namespace Serving.Inference.EarlyExit;

/// <summary>The exit criteria a request can name (<c>early_exit.criterion</c>).</summary>
public enum ExitCriterionKind
{
    /// <summary>A trained probe per layer: P(the top-1 here equals the final one).</summary>
    Probe,

    /// <summary>State saturation (CALM): cosine similarity of the hidden states before and after the block.</summary>
    Cosine,

    /// <summary>Geva et al.'s FFN view on a restricted vocabulary: do the block's strongest sub-updates promote the current top-1?</summary>
    UpdateView,

    /// <summary>The full head's softmax margin (top-1 minus top-2 probability): the quality reference, dearer than a layer.</summary>
    Margin,
}

/// <summary>What a criterion sees of one token after <see cref="Layer"/> blocks.</summary>
public ref struct ExitView
{
    /// <summary>Blocks run so far (1..L−1).</summary>
    public int Layer;

    /// <summary>The hidden state after them, hidden[Layer] [d].</summary>
    public ReadOnlySpan<float> Hidden;

    /// <summary>The last block's input, hidden[Layer − 1] [d].</summary>
    public ReadOnlySpan<float> Previous;

    /// <summary>The last block's feed-forward activations [ffn].</summary>
    public ReadOnlySpan<float> Ffn;

    /// <summary>The token's state across its layers (<see cref="IExitCriterion.StateSize"/> ints), zero before its first layer.</summary>
    public Span<int> State;

    /// <summary>Scratch of <see cref="IExitCriterion.ScratchSize"/> floats.</summary>
    public Span<float> Scratch;
}

/// <summary>
/// Decides, after a block, how sure a token's prediction is; the engine exits the token when the confidence reaches the
/// policy's threshold. Implementations are immutable, shared, allocation-free per call, and far cheaper than a layer
/// (except <see cref="ExitCriterionKind.Margin"/>, the reference).
/// </summary>
public interface IExitCriterion
{
    ExitCriterionKind Kind { get; }

    /// <summary>Floats of scratch per call.</summary>
    int ScratchSize { get; }

    /// <summary>Ints of per-token state kept across the token's layers.</summary>
    int StateSize { get; }

    /// <summary>Confidence that stopping here keeps the full model's top-1 (compared with a threshold; larger is surer).</summary>
    float Confidence(ref ExitView view);
}

/// <summary>
/// A row's early-exit setting: exit after the first block where <see cref="Criterion"/>'s confidence ≥
/// <see cref="Threshold"/>. <see cref="Propagate"/> false skips the state propagation of the skipped blocks' K/V: only
/// for rows whose skipped blocks are filled otherwise (self-speculative drafts, which the verification pass fills).
/// </summary>
public sealed record ExitPolicy(IExitCriterion Criterion, float Threshold, bool Propagate = true);

/// <summary>Exits after a fixed number of blocks, every token (self-speculative drafting with the first E layers).</summary>
public sealed class FixedDepthCriterion(int layer) : IExitCriterion
{
    public int Layer { get; } = layer;
    public ExitCriterionKind Kind => ExitCriterionKind.Probe;
    public int ScratchSize => 0;
    public int StateSize => 0;
    public float Confidence(ref ExitView view) => view.Layer == Layer ? 1f : 0f;
}
