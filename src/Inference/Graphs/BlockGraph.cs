using Onnx;
using Serving.Checkpoints;
using DT = Onnx.TensorProto.Types.DataType;

namespace Serving.Inference.Graphs;

/// <summary>
/// Builds one transformer block as a standalone ONNX model. Inputs: <c>hidden</c> [batch, seq, d],
/// <c>past_key</c>/<c>past_value</c> [batch, kv_heads, max_ctx, head_dim] (bound to the same buffers as the presents:
/// the cache is updated in place), <c>seqlens_k</c> int32 [batch] (total length − 1 per row),
/// <c>total_seq_len</c> int32 scalar, and for rotary models <c>position_ids</c> int64 [batch, seq].
/// Outputs: <c>hidden_out</c>, <c>present_key</c>, <c>present_value</c>.
/// </summary>
internal static class BlockGraph
{
    public const string Hidden = "hidden";
    public const string HiddenOut = "hidden_out";
    public const string PastKey = "past_key";
    public const string PastValue = "past_value";
    public const string PresentKey = "present_key";
    public const string PresentValue = "present_value";
    public const string SeqLensK = "seqlens_k";
    public const string TotalSeqLen = "total_seq_len";
    public const string PositionIds = "position_ids";

    /// <summary>
    /// int64 [G, T, 2]: (row, position) of the tokens of each adapter group, padded to the largest group's T with any
    /// valid token (the padding's update is masked to zero by <see cref="LoraMask"/>).
    /// </summary>
    public const string LoraIndex = "lora_index";

    /// <summary>float [G, T, 1]: 1 for a real entry of <see cref="LoraIndex"/>, 0 for padding.</summary>
    public const string LoraMask = "lora_mask";

    /// <summary>
    /// int64 [batch, seq, 2]: for every token, the (group, entry) of <see cref="LoraIndex"/> that holds its update, or
    /// a padding entry (whose update is zero) for tokens without an adapter.
    /// </summary>
    public const string LoraTokens = "lora_tokens";

    /// <summary>
    /// <c>loraVariant</c> of the block for steps whose every token uses one adapter: <c>y + (x·Aᵀ)·B</c> on the whole
    /// batch with that adapter's exact-rank A [r, in] and B [r, out], no gather or scatter.
    /// </summary>
    public const int AllTokensOneAdapter = -1;

    /// <summary>
    /// <c>loraVariant</c> of the block for steps that mix adapters: A [G, R, in] and B [G, R, out] are the first G slot
    /// blocks (rank capacity R, zero-padded), and every projection runs one batched MatMul per side for all groups.
    /// </summary>
    public const int BatchedGroups = -2;

    /// <summary>
    /// <c>loraVariant</c> of the block for any step with adapters on the CPU provider: every projection adds its update
    /// with one <see cref="Adapters.SegmentedLoraOp"/> node that reads A [S, R, in] and B [S, R, out] of every slot, the
    /// slot ranks and the step's <see cref="LoraPlan"/>. Serves prefills, one-adapter and mixed steps alike.
    /// </summary>
    public const int Segmented = -3;

    /// <summary>Packed blocks: int64 [P], the step's rows (layout in <see cref="Attention.SlotAttentionOp"/>).</summary>
    public const string KvPlan = "kv_plan";

    /// <summary>Packed blocks: the layer's whole K cache [S, KV, C, hd] (written in place by the attention).</summary>
    public const string KCache = "k_cache";

    /// <summary>Packed blocks: the layer's whole V cache [S, KV, C, hd].</summary>
    public const string VCache = "v_cache";

    /// <summary>Packed blocks' second output: the feed-forward activations [1, N, ffn] (early-exit criteria read them).</summary>
    public const string FfnActivations = "ffn_act";

    /// <summary>int64 [P]: the step's segments and their tokens (layout in <see cref="Adapters.SegmentedLoraOp"/>).</summary>
    public const string LoraPlan = "lora_plan";

    /// <summary>Name of a projection's slot-ranks input (int64 [S], by block position) in the <see cref="Segmented"/> variant.</summary>
    public static string LoraRanks(Adapters.AdaptedProjection projection) => $"lora_{(int)projection}_ranks";

    /// <summary>Name of a projection's A or B input.</summary>
    public static string LoraInput(Adapters.AdaptedProjection projection, bool a) =>
        $"lora_{(int)projection}_{(a ? 'a' : 'b')}";

    /// <summary>
    /// Builds block <paramref name="layer"/>. With <paramref name="loraVariant"/> <see cref="AllTokensOneAdapter"/> or
    /// <see cref="BatchedGroups"/> every projection also adds its low-rank update (see <see cref="AddLora"/>); 0 builds
    /// the plain base block.
    /// </summary>
    public static byte[] Build(ModelConfig c, LayerWeights w, int layer, int maxContext, RotaryTables? rotary, int loraVariant = 0) =>
        Build(c, w, layer, maxContext, rotary, loraVariant, shareWeights: false).Model;

    /// <summary>
    /// As <see cref="Build(ModelConfig, LayerWeights, int, int, RotaryTables?, int)"/>; with <paramref name="shareWeights"/>
    /// the projection weights are placeholders the caller supplies per session (returned as <c>Shared</c>).
    /// </summary>
    public static (byte[] Model, List<(string Name, Array Values, long[] Dims)> Shared) Build(ModelConfig c, LayerWeights w, int layer,
        int maxContext, RotaryTables? rotary, int loraVariant, bool shareWeights, bool packed = false, bool cpuNorm = false)
    {
        var name = loraVariant switch
        {
            0 => $"block_{layer}",
            AllTokensOneAdapter => $"block_{layer}_lora_all",
            BatchedGroups => $"block_{layer}_lora_batched",
            Segmented => $"block_{layer}_lora_segmented",
            _ => throw new ArgumentOutOfRangeException(nameof(loraVariant), loraVariant, "0, AllTokensOneAdapter, BatchedGroups or Segmented"),
        };
        if (packed && loraVariant is not (0 or Segmented)) throw new ArgumentException("packed blocks take adapters through the segmented operator only", nameof(loraVariant));
        var g = new GraphBuilder(packed ? name + "_packed" : name) { ShareWeights = shareWeights };
        if (packed)
        {
            // Packed: [1, N, d] tokens of any rows; attention through the whole cache and the step's plan.
            if (c.Architecture == ModelArchitecture.Llama) g.Input(PositionIds, DT.Int64, "batch", "seq");
            g.Input(KvPlan, DT.Int64, "kv_plan_length");
            g.Input(KCache, DT.Float, "slots", c.NumKvHeads, maxContext, c.HeadDim);
            g.Input(VCache, DT.Float, "slots", c.NumKvHeads, maxContext, c.HeadDim);
        }
        else
        {
            DeclareSharedInputs(g, c);
        }
        if (loraVariant != 0) DeclareLoraInputs(g, c, loraVariant);
        g.Input(Hidden, DT.Float, "batch", "seq", c.HiddenSize);
        if (!packed)
        {
            g.Input(PastKey, DT.Float, "batch", c.NumKvHeads, maxContext, c.HeadDim);
            g.Input(PastValue, DT.Float, "batch", c.NumKvHeads, maxContext, c.HeadDim);
        }
        Add(g, c, w, "", Hidden, HiddenOut, PastKey, PastValue, PresentKey, PresentValue, rotary, loraVariant, packed, layer, cpuNorm);
        if (!packed)
        {
            g.Output(PresentKey, DT.Float, "batch", c.NumKvHeads, maxContext, c.HeadDim);
            g.Output(PresentValue, DT.Float, "batch", c.NumKvHeads, maxContext, c.HeadDim);
        }
        g.Output(HiddenOut, DT.Float, "batch", "seq", c.HiddenSize);
        if (packed) g.Output(FfnActivations, DT.Float, "batch", "seq", c.IntermediateSize);
        return (g.ToBytes(), g.SharedWeights);
    }

    /// <summary>Declares the inputs every block reads: sequence lengths and (rotary models) positions.</summary>
    public static void DeclareSharedInputs(GraphBuilder g, ModelConfig c)
    {
        g.Input(SeqLensK, DT.Int32, "batch");
        g.Input(TotalSeqLen, DT.Int32);
        if (c.Architecture == ModelArchitecture.Llama) g.Input(PositionIds, DT.Int64, "batch", "seq");
    }

    /// <summary>Declares the adapter inputs of a <paramref name="variant"/> block.</summary>
    private static void DeclareLoraInputs(GraphBuilder g, ModelConfig c, int variant)
    {
        if (variant == Segmented)
        {
            g.Input(LoraPlan, DT.Int64, "lora_plan_length");
            for (var p = 0; p < Adapters.AdapterFactors.ProjectionCount; p++)
            {
                var projection = (Adapters.AdaptedProjection)p;
                var (inDim, outDim) = Adapters.AdapterFactors.Shape(c, projection);
                g.Input(LoraInput(projection, a: true), DT.Float, "lora_slots", $"rank_{p}", inDim);
                g.Input(LoraInput(projection, a: false), DT.Float, "lora_slots", $"rank_{p}", outDim);
                g.Input(LoraRanks(projection), DT.Int64, "lora_slots");
            }
            return;
        }
        var batched = variant == BatchedGroups;
        if (batched)
        {
            g.Input(LoraIndex, DT.Int64, "lora_groups", "lora_group_tokens", 2);
            g.Input(LoraMask, DT.Float, "lora_groups", "lora_group_tokens", 1);
            g.Input(LoraTokens, DT.Int64, "batch", "seq", 2);
        }
        for (var p = 0; p < Adapters.AdapterFactors.ProjectionCount; p++)
        {
            var projection = (Adapters.AdaptedProjection)p;
            var (inDim, outDim) = Adapters.AdapterFactors.Shape(c, projection);
            if (batched)
            {
                g.Input(LoraInput(projection, a: true), DT.Float, "lora_groups", $"rank_{p}", inDim);
                g.Input(LoraInput(projection, a: false), DT.Float, "lora_groups", $"rank_{p}", outDim);
            }
            else
            {
                g.Input(LoraInput(projection, a: true), DT.Float, $"rank_{p}", inDim);
                g.Input(LoraInput(projection, a: false), DT.Float, $"rank_{p}", outDim);
            }
        }
    }

    /// <summary>
    /// Adds the low-rank update to projection output <paramref name="y"/> (input <paramref name="x"/>). A is [r, in]
    /// (PEFT's orientation), so the first product is FusedMatMul with transB.
    /// <list type="bullet">
    /// <item><see cref="Segmented"/>: one custom node (<see cref="Adapters.SegmentedLoraOp"/>).</item>
    /// <item><see cref="AllTokensOneAdapter"/>: <c>y + (x·Aᵀ)·B</c>; three nodes, and a rank-0 (empty) pair adds nothing.</item>
    /// <item><see cref="BatchedGroups"/>: the groups' tokens are gathered by (row, position) into [G, T, in], multiplied
    /// by the stacked [G, R, in]ᵀ and [G, R, out] in one batched MatMul each (one MLAS GEMM per group inside one node),
    /// padding masked to zero, and every token's update gathered back in token order (tokens without an adapter read a
    /// zero padding entry) and added to the base output. Six nodes per projection whatever G is. (ScatterND with
    /// reduction = add would save the full-size add, but ONNX Runtime's CPU kernel scatters in parallel, so padding
    /// entries sharing a target would race with the real update.)</item>
    /// </list>
    /// </summary>
    internal static string AddLora(GraphBuilder g, string x, string y, Adapters.AdaptedProjection projection, string name, int variant)
    {
        var a = LoraInput(projection, a: true);
        var b = LoraInput(projection, a: false);
        if (variant == Segmented)
        {
            return g.Node(Adapters.SegmentedLoraOp.Name, [y, x, a, b, LoraRanks(projection), LoraPlan], name + "_lora", Adapters.SegmentedLoraOp.Domain);
        }
        if (variant == AllTokensOneAdapter)
        {
            var low = g.Node("FusedMatMul", [x, a], name + "_lxa", GraphBuilder.MicrosoftDomain, ("transB", 1L));
            var delta = g.Node("MatMul", [low, b], name + "_ld");
            return g.Node("Add", [y, delta], name + "_lora");
        }
        var xs = g.Node("GatherND", [x, LoraIndex], name + "_lxg");                                                   // [G, T, in]
        var lows = g.Node("FusedMatMul", [xs, a], name + "_lxa", GraphBuilder.MicrosoftDomain, ("transB", 1L));      // [G, T, R]
        var masked = g.Node("Mul", [lows, LoraMask], name + "_lxm");
        var deltas = g.Node("MatMul", [masked, b], name + "_ld");                                                     // [G, T, out]
        var perToken = g.Node("GatherND", [deltas, LoraTokens], name + "_ldg");                                      // [batch, seq, out]
        return g.Node("Add", [y, perToken], name + "_lora");
    }

    /// <summary>Adds one block's nodes to <paramref name="g"/>, naming its internals with <paramref name="prefix"/>.</summary>
    public static void Add(GraphBuilder g, ModelConfig c, LayerWeights w, string prefix, string hidden, string hiddenOut,
        string pastKey, string pastValue, string presentKey, string presentValue, RotaryTables? rotary, int loraVariant = 0, bool packed = false, int layer = 0,
        bool cpuNorm = false)
    {
        int d = c.HiddenSize, hd = c.HeadDim, q = c.NumHeads * hd, kv = c.NumKvHeads * hd, f = c.IntermediateSize;
        var llama = c.Architecture == ModelArchitecture.Llama;
        string N(string s) => prefix + s;

        // Attention
        var n1 = Norm(g, c, hidden, w.Norm1Weight, w.Norm1Bias, N("ln1"));
        var quant = w.Quantized;
        var qkv = Linear(g, n1, w.QkvWeight, w.QkvBias, d, q + 2 * kv, N("qkv"), quant?.Qkv, quant?.AccuracyLevel ?? 0);
        if (loraVariant != 0) qkv = AddLora(g, n1, qkv, Adapters.AdaptedProjection.Qkv, N("qkv"), loraVariant);
        var parts = g.NodeMulti("Split", [qkv, g.Int64s(N("qkv_split"), q, kv, kv)], [N("q"), N("k"), N("v")], "", ("axis", 2L));
        string qIn = parts[0], kIn = parts[1];
        if (llama)
        {
            var caches = RotaryCaches(g, rotary!, prefix);
            qIn = PositionQueryOrKey(g, c, qIn, w.QNorm, c.NumHeads, rotary!, caches, N("q"));
            kIn = PositionQueryOrKey(g, c, kIn, w.KNorm, c.NumKvHeads, rotary!, caches, N("k"));
        }
        var window = c.SlidingWindow(layer);
        string attn;
        if (packed)
        {
            var parameters = g.Weight(N("attn_params"), Attention.SlotAttentionOp.Parameters(c, layer), Attention.SlotAttentionOp.ParameterCount);
            attn = g.Node(Attention.SlotAttentionOp.Name, [qIn, kIn, parts[2], KCache, VCache, KvPlan, parameters], N("attn"), Attention.SlotAttentionOp.Domain);
        }
        else
        {
            var attributes = new List<(string, object)> { ("num_heads", (long)c.NumHeads), ("kv_num_heads", (long)c.NumKvHeads) };
            if (c.AttentionScale is { } scale) attributes.Add(("scale", scale));
            if (c.AttentionSoftcap is { } cap) attributes.Add(("softcap", cap));
            if (window > 0) attributes.Add(("local_window_size", (long)window));
            attn = g.NodeMulti("GroupQueryAttention",
                [qIn, kIn, parts[2], pastKey, pastValue, SeqLensK, TotalSeqLen],
                [N("attn"), presentKey, presentValue], GraphBuilder.MicrosoftDomain, [.. attributes])[0];
        }
        // The output projection's bias rides in the fused residual + norm below unless a post-attention norm needs it first.
        var foldBias = w.PostAttnNorm is null ? w.OutBias : null;
        var o = Linear(g, attn, w.OutWeight, foldBias is null ? w.OutBias : null, q, d, N("o"), quant?.Out, quant?.AccuracyLevel ?? 0);
        if (loraVariant != 0) o = AddLora(g, attn, o, Adapters.AdaptedProjection.Out, N("o"), loraVariant);
        if (w.PostAttnNorm is not null) o = Norm(g, c, o, w.PostAttnNorm, null, N("ln_post_attn"));

        // Feed-forward: x2 = hidden + o (+ bias) and its norm in one node.
        var (n2, x2) = SkipNorm(g, c, hidden, o, foldBias, w.Norm2Weight, w.Norm2Bias, N("ln2"), N("resid1"), cpuOperator: packed || cpuNorm);
        string act;
        if (llama)
        {
            var gu = Linear(g, n2, w.UpWeight, w.UpBias, d, 2 * f, N("gate_up"), quant?.Up, quant?.AccuracyLevel ?? 0);
            if (loraVariant != 0) gu = AddLora(g, n2, gu, Adapters.AdaptedProjection.Up, N("gate_up"), loraVariant);
            var gates = g.NodeMulti("Split", [gu, g.Int64s(N("gu_split"), f, f)], [N("gate"), N("up")], "", ("axis", 2L));
            var gated = c.GeluGate
                ? g.Node("FastGelu", [gates[0]], N("gelu"), GraphBuilder.MicrosoftDomain) // GELU, tanh approximation (Gemma's GeGLU)
                : g.Node("Mul", [gates[0], g.Node("Sigmoid", [gates[0]], N("sig"))], N("silu"));
            act = g.Node("Mul", [gated, gates[1]], packed ? FfnActivations : N("swiglu"));
        }
        else
        {
            var fc = quant is null
                ? g.Node("MatMul", [n2, g.ShareableWeight(N("fc_w"), w.UpWeight, d, f)], N("fc"))
                : QuantizedMatMul(g, n2, quant.Up, quant.AccuracyLevel, N("fc"));
            var fcBias = g.Weight(N("fc_b"), w.UpBias!, f);
            if (loraVariant != 0)
            {
                // FastGelu takes the bias separately; the update must land before the activation.
                fc = AddLora(g, n2, fc, Adapters.AdaptedProjection.Up, N("fc"), loraVariant);
            }
            act = g.Node("FastGelu", [fc, fcBias], packed ? FfnActivations : N("gelu"), GraphBuilder.MicrosoftDomain);
        }
        var m = Linear(g, act, w.DownWeight, w.DownBias, f, d, N("down"), quant?.Down, quant?.AccuracyLevel ?? 0);
        if (loraVariant != 0) m = AddLora(g, act, m, Adapters.AdaptedProjection.Down, N("down"), loraVariant);
        if (w.PostFfnNorm is not null) m = Norm(g, c, m, w.PostFfnNorm, null, N("ln_post_ffn"));
        g.Node("Add", [x2, m], hiddenOut);
    }

    /// <summary>
    /// q or k [.., heads·hd] of a rotary model as attention reads it: the per-head RMSNorm first where the model has one
    /// (Qwen3's <c>q_norm</c>/<c>k_norm</c>), then rotary on the first <see cref="RotaryTables.Dim"/> dimensions of each
    /// head (the rest pass through: <c>partial_rotary_factor</c>).
    /// </summary>
    internal static string PositionQueryOrKey(GraphBuilder g, ModelConfig c, string x, float[]? headNorm, int heads, RotaryTables rotary,
        (string Cos, string Sin) caches, string name)
    {
        var hd = c.HeadDim;
        if (headNorm is not null)
        {
            var perHead = g.Node("Reshape", [x, g.Int64s(name + "_heads_shape", 0, 0, heads, hd)], name + "_heads");
            var normed = g.Node("SimplifiedLayerNormalization", [perHead, g.Weight(name + "_norm_w", headNorm, hd)], name + "_norm", "", ("axis", -1L), ("epsilon", c.NormEps));
            x = g.Node("Reshape", [normed, g.Int64s(name + "_flat_shape", 0, 0, heads * hd)], name + "_normed");
        }
        var attributes = new List<(string, object)> { ("interleaved", 0L), ("num_heads", (long)heads) };
        if (rotary.Dim != hd) attributes.Add(("rotary_embedding_dim", (long)rotary.Dim));
        return g.Node("RotaryEmbedding", [x, PositionIds, caches.Cos, caches.Sin], name + "_rot", GraphBuilder.MicrosoftDomain, [.. attributes]);
    }

    /// <summary>Adds the rotary cos/sin tables [positions, rotary_dim/2] as initializers (once per graph; q and k share them).</summary>
    internal static (string Cos, string Sin) RotaryCaches(GraphBuilder g, RotaryTables rotary, string prefix = "") =>
        (g.Weight(prefix + "cos_cache", rotary.Cos, rotary.MaxPositions, rotary.Dim / 2),
         g.Weight(prefix + "sin_cache", rotary.Sin, rotary.MaxPositions, rotary.Dim / 2));

    /// <summary>
    /// The residual sum <c>x + skip (+ bias)</c> and its norm in one contrib node (<c>SkipLayerNormalization</c>, or
    /// <c>SkipSimplifiedLayerNormalization</c> for RMSNorm): one pass over the activations instead of an Add, a bias Add
    /// and the norm. Returns (normed, sum). With <paramref name="cpuOperator"/> (fp32 graphs the CPU provider runs, whose
    /// options register <see cref="Numerics.SkipLayerNormOp"/>: <see cref="Runtime.OrtRuntime.CreateSessionOptions"/>)
    /// a LayerNorm model gets the C# operator instead, ONNX Runtime's CPU kernel of the LayerNorm form being 2–6× slower
    /// (RMSNorm's is not).
    /// </summary>
    internal static (string Normed, string Sum) SkipNorm(GraphBuilder g, ModelConfig c, string x, string skip, float[]? skipBias,
        float[] weight, float[]? normBias, string name, string sumName, bool cpuOperator = false)
    {
        var d = c.HiddenSize;
        if (weight.Length != d) throw new ArgumentException($"norm '{name}': {weight.Length} weights for width {d}", nameof(weight));
        var gpt2 = c.Architecture == ModelArchitecture.Gpt2;
        if (gpt2 && cpuOperator)
        {
            var normed = g.NodeMulti(Numerics.SkipLayerNormOp.Name,
                [x, skip, g.Weight(name + "_w", weight, d), g.Weight(name + "_b", normBias!, d), g.Weight(name + "_skip_b", skipBias ?? new float[d], d), g.Weight(name + "_eps", [c.NormEps], 1)],
                [name, sumName], Numerics.SkipLayerNormOp.Domain);
            return (normed[0], normed[1]);
        }
        var inputs = new List<string> { x, skip, g.Weight(name + "_w", weight, d) };
        if (gpt2) inputs.Add(g.Weight(name + "_b", normBias!, d));
        if (skipBias is not null) inputs.Add(g.Weight(name + "_skip_b", skipBias, d)); // (input, skip, gamma[, beta], bias)
        var outputs = g.NodeMulti(gpt2 ? "SkipLayerNormalization" : "SkipSimplifiedLayerNormalization", [.. inputs],
            [name, "", "", sumName], GraphBuilder.MicrosoftDomain, ("epsilon", c.NormEps));
        return (outputs[0], outputs[3]);
    }

    internal static string Norm(GraphBuilder g, ModelConfig c, string x, float[] weight, float[]? bias, string name)
    {
        var d = c.HiddenSize;
        if (weight.Length != d) throw new ArgumentException($"norm '{name}': {weight.Length} weights for width {d}", nameof(weight));
        var scale = g.Weight(name + "_w", weight, d);
        if (c.Architecture == ModelArchitecture.Gpt2)
        {
            return g.Node("LayerNormalization", [x, scale, g.Weight(name + "_b", bias!, d)], name, "", ("axis", -1L), ("epsilon", c.NormEps));
        }
        return g.Node("SimplifiedLayerNormalization", [x, scale], name, "", ("axis", -1L), ("epsilon", c.NormEps));
    }

    /// <summary>x · W (+ bias): MatMul on the fp32 weight, or MatMulNBits on its quantised form when one is given.</summary>
    internal static string Linear(GraphBuilder g, string x, float[] weight, float[]? bias, int inDim, int outDim, string name,
        QuantizedWeight? quantized = null, int accuracyLevel = 0)
    {
        var output = bias is null ? name : name + "_mm";
        var y = quantized is null
            ? g.Node("MatMul", [x, g.ShareableWeight(name + "_w", weight, inDim, outDim)], output)
            : QuantizedMatMul(g, x, quantized, accuracyLevel, output);
        return bias is null ? y : g.Node("Add", [y, g.Weight(name + "_b", bias, outDim)], name);
    }

    /// <summary>
    /// <c>com.microsoft::MatMulNBits</c> over a quantised weight (shareable initializers: values, scales, zero points).
    /// <paramref name="accuracyLevel"/>: 0 computes in fp32 on the dequantised weight; 4 quantises the activations to
    /// int8 per block and runs integer dot products (faster, one more rounding).
    /// </summary>
    internal static string QuantizedMatMul(GraphBuilder g, string x, QuantizedWeight w, int accuracyLevel, string output)
    {
        var inputs = new List<string>
        {
            x,
            g.ShareableBytes(output + "_q", w.Data, w.N, w.Blocks, w.BlobSize),
            g.ShareableWeight(output + "_scales", w.Scales, w.Scales.Length),
        };
        if (w.ZeroPoints is not null) inputs.Add(g.ShareableBytes(output + "_zp", w.ZeroPoints, w.ZeroPoints.Length));
        return g.Node("MatMulNBits", [.. inputs], output, GraphBuilder.MicrosoftDomain,
            ("K", (long)w.K), ("N", (long)w.N), ("bits", (long)w.Bits), ("block_size", (long)w.BlockSize), ("accuracy_level", (long)accuracyLevel));
    }
}
