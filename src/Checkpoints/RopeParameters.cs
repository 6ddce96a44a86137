namespace Serving.Checkpoints;

/// <summary>The rotary variants the engine serves (<c>rope_type</c> of <c>rope_scaling</c> / <c>rope_parameters</c>).</summary>
public enum RopeType
{
    /// <summary>Unscaled rotary: <c>inv_freq[i] = θ^(−2i/dim)</c>.</summary>
    Default,

    /// <summary>Position interpolation: every inverse frequency divided by <c>factor</c>.</summary>
    Linear,

    /// <summary>Dynamic NTK: θ grows with the sequence length once it passes <c>max_position_embeddings</c>.</summary>
    Dynamic,

    /// <summary>YaRN: per-dimension blend of interpolated and original frequencies, cos/sin scaled by an attention factor.</summary>
    Yarn,

    /// <summary>Llama 3.1/3.2 frequency smoothing between <c>low_freq_factor</c> and <c>high_freq_factor</c>.</summary>
    Llama3,
}

/// <summary>
/// A rotary embedding's parameters as <c>transformers</c> 5 standardises them (<c>RotaryEmbeddingConfigMixin</c>): read
/// from <c>rope_parameters</c> (5.x configs) or <c>rope_scaling</c> (older ones; it wins when both are set), with
/// <c>rope_theta</c> and <c>partial_rotary_factor</c> from the top level or the dict. The inverse frequencies themselves are
/// computed by the engine (<c>Serving.Inference.Graphs.RotaryTables</c>).
/// </summary>
public sealed record RopeParameters
{
    /// <summary>Unscaled rotary over the whole head.</summary>
    public static RopeParameters Default { get; } = new();

    public RopeType Type { get; init; } = RopeType.Default;

    /// <summary>Fraction of each head that rotates (<c>partial_rotary_factor</c>; the first <c>int(head_dim × f)</c> dims).</summary>
    public double PartialRotaryFactor { get; init; } = 1.0;

    /// <summary><c>factor</c> (linear, dynamic, yarn, llama3).</summary>
    public double Factor { get; init; } = 1.0;

    /// <summary>
    /// The pre-training context: <c>original_max_position_embeddings</c> (llama3, yarn; a top-level key wins, as for
    /// Phi-3), or <c>max_position_embeddings</c> (dynamic, and yarn without the key).
    /// </summary>
    public int OriginalMaxPositions { get; init; }

    /// <summary>llama3: <c>low_freq_factor</c>.</summary>
    public double LowFreqFactor { get; init; }

    /// <summary>llama3: <c>high_freq_factor</c>.</summary>
    public double HighFreqFactor { get; init; }

    /// <summary>yarn: <c>attention_factor</c> as given (null: derived from <c>factor</c>, <c>mscale</c>, <c>mscale_all_dim</c>).</summary>
    public double? AttentionFactor { get; init; }

    /// <summary>yarn: <c>beta_fast</c> (32 when absent or 0).</summary>
    public double BetaFast { get; init; } = 32;

    /// <summary>yarn: <c>beta_slow</c> (1 when absent or 0).</summary>
    public double BetaSlow { get; init; } = 1;

    /// <summary>yarn: <c>mscale</c>.</summary>
    public double? Mscale { get; init; }

    /// <summary>yarn: <c>mscale_all_dim</c>.</summary>
    public double? MscaleAllDim { get; init; }

    /// <summary>yarn: <c>truncate</c> (round the correction range outwards; default true).</summary>
    public bool Truncate { get; init; } = true;

    /// <summary>The rotary types this reader knows, for messages.</summary>
    public const string Supported = "default, linear, dynamic, yarn, llama3";

    /// <summary>
    /// Reads the rotary parameters of a Llama-family config. <paramref name="maxPositions"/> is
    /// <c>max_position_embeddings</c>; the returned theta is <c>rope_theta</c> (dict first, then top level, then
    /// <paramref name="defaultTheta"/>).
    /// </summary>
    internal static (RopeParameters Rope, double Theta) Read(ConfigReader root, int maxPositions, double defaultTheta)
    {
        var dictKey = root.HasNonNull("rope_scaling") ? "rope_scaling" : "rope_parameters";
        var dict = root.OptionalObject(dictKey);
        if (dict is not null && (dict.Contains("full_attention") || dict.Contains("sliding_attention")))
        {
            throw root.Unsupported(dictKey, "rotary parameters per layer type (full_attention / sliding_attention) are not supported");
        }
        var theta = dict?.OptionalDouble("rope_theta") ?? root.OptionalDouble("rope_theta") ?? defaultTheta;
        var partial = root.OptionalDouble("partial_rotary_factor") ?? dict?.OptionalDouble("partial_rotary_factor") ?? 1.0;
        if (!(partial > 0 && partial <= 1))
        {
            throw root.Unsupported("partial_rotary_factor", $"must be in (0, 1], got {partial}");
        }
        if (dict is null) return (new RopeParameters { PartialRotaryFactor = partial }, theta);

        var typeKey = dict.HasNonNull("rope_type") ? "rope_type" : "type";
        var name = dict.OptionalString(typeKey) ?? "default";
        var type = name switch
        {
            "default" => RopeType.Default,
            "linear" => RopeType.Linear,
            "dynamic" => RopeType.Dynamic,
            "yarn" => RopeType.Yarn,
            "llama3" => RopeType.Llama3,
            "longrope" => throw dict.Unsupported(typeKey,
                "'longrope' (Phi-3 long-context) is not supported: transformers switches every token's frequencies between short and long factors by the length of the forward pass, which a cached key cannot follow"),
            _ => throw dict.Unsupported(typeKey, $"'{name}' is not supported ({Supported})"),
        };
        if (type == RopeType.Default) return (new RopeParameters { PartialRotaryFactor = partial }, theta);

        // A top-level original_max_position_embeddings wins (Phi-3 keeps it outside the dict), as in transformers.
        var original = root.OptionalInt("original_max_position_embeddings") ?? dict.OptionalInt("original_max_position_embeddings");
        double factor;
        if (type == RopeType.Yarn && !dict.HasNonNull("factor"))
        {
            // yarn without factor: the ratio of the extended to the original context (DeepSeek-V3 style).
            factor = original is > 0 ? (double)maxPositions / original.Value : throw dict.Unsupported("factor", "yarn needs 'factor' or 'original_max_position_embeddings'");
        }
        else
        {
            factor = dict.RequiredDouble("factor");
        }
        if (!(factor >= 1.0 && double.IsFinite(factor)))
        {
            throw dict.Unsupported("factor", $"must be a finite number >= 1, got {factor}");
        }
        var rope = new RopeParameters { Type = type, PartialRotaryFactor = partial, Factor = factor };
        switch (type)
        {
            case RopeType.Linear:
                return (rope, theta);
            case RopeType.Dynamic:
                // transformers' dynamic NTK measures growth against max_position_embeddings, never the dict's key.
                return (rope with { OriginalMaxPositions = maxPositions }, theta);
            case RopeType.Llama3:
            {
                var low = dict.RequiredDouble("low_freq_factor");
                var high = dict.RequiredDouble("high_freq_factor");
                if (!(high > low)) throw dict.Unsupported("high_freq_factor", $"must be greater than low_freq_factor ({low}), got {high}");
                if (!(low > 0)) throw dict.Unsupported("low_freq_factor", $"must be positive, got {low}");
                var old = original ?? maxPositions;
                if (old <= 0) throw dict.Unsupported("original_max_position_embeddings", $"must be positive, got {old}");
                return (rope with { LowFreqFactor = low, HighFreqFactor = high, OriginalMaxPositions = old }, theta);
            }
            default: // Yarn
            {
                var old = original ?? maxPositions;
                if (old <= 0) throw dict.Unsupported("original_max_position_embeddings", $"must be positive, got {old}");
                var attention = dict.OptionalDouble("attention_factor");
                if (attention is <= 0) throw dict.Unsupported("attention_factor", $"must be positive, got {attention}");
                var betaFast = dict.OptionalDouble("beta_fast") is { } bf && bf != 0 ? bf : 32;
                var betaSlow = dict.OptionalDouble("beta_slow") is { } bs && bs != 0 ? bs : 1;
                return (rope with
                {
                    OriginalMaxPositions = old,
                    AttentionFactor = attention,
                    BetaFast = betaFast,
                    BetaSlow = betaSlow,
                    Mscale = dict.OptionalDouble("mscale"),
                    MscaleAllDim = dict.OptionalDouble("mscale_all_dim"),
                    Truncate = dict.OptionalBool("truncate") ?? true,
                }, theta);
            }
        }
    }
}
