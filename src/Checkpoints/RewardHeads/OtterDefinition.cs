namespace Serving.Checkpoints.RewardHeads;

/// <summary>One layer of an Otter side network: extra attention heads and FFN neurons that read the base layer's normed input.</summary>
public sealed record OtterLayer
{
    /// <summary>The base layer (0-based) whose normed input this side layer reads.</summary>
    public required int Layer { get; init; }

    /// <summary>The base tensor whose weight normalises the layer input (the layer's <c>input_layernorm</c> / <c>ln_1</c>).</summary>
    public required string InputNorm { get; init; }

    /// <summary>[heads·head_dim, d] each.</summary>
    public required float[] Q { get; init; }
    public required float[] K { get; init; }
    public required float[] V { get; init; }

    /// <summary>[side, heads·head_dim].</summary>
    public required float[] O { get; init; }

    /// <summary>[ffn, d] each.</summary>
    public required float[] Gate { get; init; }
    public required float[] Up { get; init; }

    /// <summary>[side, ffn].</summary>
    public required float[] Down { get; init; }
}

/// <summary>
/// The full Otter form (<c>kind: otter-side-network</c>, the format of <c>models/demo/otter</c>): a side stream
/// s ∈ R^<see cref="SideSize"/> per position, s₀ = 0; at every base layer l that has a side layer (all of them, or a
/// subset: <see cref="Layers"/>, in base-layer order) the side network reads x_l = norm_l(h_l) (the vector the base
/// attention reads), adds its own attention heads (with their own K/V cache and the base's RoPE) and SwiGLU FFN
/// neurons (parallel, both reading x_l) into s, and never writes the base's residual stream, so the base logits are
/// exactly unchanged. After the last layer a head (RMSNorm over the side stream, then an MLP) gives a
/// score per position, pooled like a head-only reward head's. Validated by <see cref="OtterReader"/>.
/// </summary>
public sealed record OtterDefinition
{
    public string? BaseModel { get; init; }
    public string? Label { get; init; }
    public required int SideSize { get; init; }
    public required int NumHeads { get; init; }
    public required int HeadDim { get; init; }
    public required int IntermediateSize { get; init; }
    public required float NormEps { get; init; }

    /// <summary>The side layers, one per base layer they read, in strictly increasing <see cref="OtterLayer.Layer"/> order (1 to the base's layer count).</summary>
    public required IReadOnlyList<OtterLayer> Layers { get; init; }

    /// <summary>RMSNorm weight over the side stream, applied before the head's MLP.</summary>
    public required float[] HeadNorm { get; init; }

    /// <summary>The head's MLP (first In = <see cref="SideSize"/>, last Out = 1).</summary>
    public required IReadOnlyList<DenseLayer> HeadLayers { get; init; }

    public required RewardActivation Activation { get; init; }

    public required RewardPooling Pooling { get; init; }

    /// <summary>Parameters of the side layers and the head.</summary>
    public long Parameters
    {
        get
        {
            long n = HeadNorm.Length;
            foreach (var l in Layers) n += l.Q.Length + l.K.Length + l.V.Length + l.O.Length + l.Gate.Length + l.Up.Length + l.Down.Length;
            foreach (var l in HeadLayers) n += l.Weight.Length + (l.Bias?.Length ?? 0);
            return n;
        }
    }
}
