using Serving.Checkpoints;
using Serving.Checkpoints.RewardHeads;
using DT = Onnx.TensorProto.Types.DataType;

namespace Serving.Inference.Graphs;

/// <summary>
/// An Otter side network as ONNX models, in two forms:
/// <list type="bullet">
/// <item><see cref="BuildLayer"/>: one layer. Inputs <c>hidden</c> [batch, seq, d] (the base layer's input h_l, read
/// only), <c>side</c> [batch, seq, side] (s_l), the side network's own <c>past_key</c>/<c>past_value</c>
/// [batch, heads, max_ctx, head_dim] (bound to the same buffers as the presents), and the step's <c>seqlens_k</c>,
/// <c>total_seq_len</c> and (rotary models) <c>position_ids</c>, exactly as a block takes them. Output
/// <c>side_out</c>. Prefill runs these between the base blocks (a prompt's hidden states are not kept per layer).</item>
/// <item><see cref="BuildStacked"/>: every layer at once, for decode steps. A side layer's update depends on its base
/// layer's input only (s_l is only added to), so the L side layers (one per base layer, or on a subset of the base
/// layers) are one batched computation: the inputs of the base layers they read [L, batch, d] (kept by the decoder
/// during the step), per-layer weights stacked [L, …] for one batched input
/// projection, then <see cref="Rewards.OtterSideStepOp"/> (rotary, cache write and attention of every (row, layer)
/// pair over the side cache laid out [slot · L + layer, heads, max_ctx, head_dim], and the SwiGLU; each row's
/// <c>position_ids</c> [batch] is its cached length), whose [batch, L·(q + f)] output meets the layers' [O; Down]
/// stacked in one MatMul that also sums the L updates. Four nodes whatever L is: per-node dispatch, not arithmetic,
/// was most of the side network's cost when it ran layer by layer, and ONNX Runtime's attention spent most of the
/// rest in per-(pair, head) GEMM calls on a one-token query.</item>
/// </list>
/// Layer l's update is o + f with x = norm_l(h_l) (the base layer's own input norm), o = attention(x·Qᵀ, x·Kᵀ, x·Vᵀ)·Oᵀ
/// (the base's RoPE on q and k) and f = (silu(x·Gateᵀ) ⊙ x·Upᵀ)·Downᵀ; s_{l+1} = s_l + o + f from s_0 = 0. Nothing the
/// base computes is an input it writes, so the base's logits cannot change.
/// </summary>
internal static class SideGraph
{
    public const string Side = "side";
    public const string SideOut = "side_out";
    public const string Inputs = "hidden_stack";
    public const string PositionIds = BlockGraph.PositionIds;

    /// <summary>Side layer <paramref name="index"/> (an entry of <c>def.Layers</c>) alone (prefill); <paramref name="inputNorm"/> is its base layer's input norm.</summary>
    public static byte[] BuildLayer(ModelConfig c, OtterDefinition def, (float[] Weight, float[]? Bias) inputNorm, int index, int maxContext, RotaryTables? rotary)
    {
        var layer = def.Layers[index];
        int d = c.HiddenSize, q = def.NumHeads * def.HeadDim, side = def.SideSize, f = def.IntermediateSize;
        var g = new GraphBuilder($"side_{index}");
        BlockGraph.DeclareSharedInputs(g, c);
        g.Input(BlockGraph.Hidden, DT.Float, "batch", "seq", d);
        g.Input(Side, DT.Float, "batch", "seq", side);
        DeclareCache(g, def, maxContext, output: false);
        var x = BlockGraph.Norm(g, c, BlockGraph.Hidden, inputNorm.Weight, inputNorm.Bias, "ln");
        var proj = g.Node("MatMul", [x, g.Weight("proj_w", ProjectionWeight(def, layer, d), d, 3 * q + 2 * f)], "proj");
        var parts = g.NodeMulti("Split", [proj, g.Int64s("proj_split", q, q, q, f, f)], ["q", "k", "v", "gate", "up"], "", ("axis", 2L));
        var (qIn, kIn) = Rotate(g, c, rotary, def, parts[0], parts[1]);
        var attn = g.NodeMulti("GroupQueryAttention",
            [qIn, kIn, parts[2], BlockGraph.PastKey, BlockGraph.PastValue, BlockGraph.SeqLensK, BlockGraph.TotalSeqLen],
            ["attn", BlockGraph.PresentKey, BlockGraph.PresentValue], GraphBuilder.MicrosoftDomain,
            ("num_heads", (long)def.NumHeads), ("kv_num_heads", (long)def.NumHeads))[0];
        var o = g.Node("MatMul", [attn, g.Weight("o_w", Transpose(layer.O, side, q), q, side)], "o");
        var ffn = g.Node("MatMul", [SwiGlu(g, parts[3], parts[4]), g.Weight("down_w", Transpose(layer.Down, side, f), f, side)], "down");
        g.Node("Add", [g.Node("Add", [Side, o], "resid"), ffn], SideOut);
        DeclareCache(g, def, maxContext, output: true);
        g.Output(SideOut, DT.Float, "batch", "seq", side);
        return g.ToBytes();
    }

    /// <summary>
    /// Every side layer as one batched computation (decode steps of one token per row); 4 nodes (5 with GPT-2's norm
    /// bias) whatever L is. L here is the number of side layers; entry l of <see cref="Inputs"/> is the input of base
    /// layer <c>def.Layers[l].Layer</c>, normed with that layer's entry of <paramref name="inputNorms"/> (indexed by base layer).
    /// </summary>
    public static byte[] BuildStacked(ModelConfig c, OtterDefinition def, IReadOnlyList<(float[] Weight, float[]? Bias)> inputNorms, int maxContext, RotaryTables? rotary)
    {
        int layers = def.Layers.Count, d = c.HiddenSize, q = def.NumHeads * def.HeadDim, side = def.SideSize, f = def.IntermediateSize;
        var g = new GraphBuilder("side_stacked");
        g.Input(Inputs, DT.Float, layers, "batch", d);
        g.Input(PositionIds, DT.Int64, "batch");
        DeclareCache(g, def, maxContext, output: false, batch: "pairs");

        // x·W_l with x = norm(h_l) ⊙ w_l (+ b_l): the per-layer norm weight folded into the rows of W_l (and the bias
        // into a per-layer output offset), so the norm itself is one op over [L, batch, d].
        var gpt2 = c.Architecture == ModelArchitecture.Gpt2;
        var ones = g.Weight("ones", Enumerable.Repeat(1f, d).ToArray(), d);
        var normed = gpt2
            ? g.Node("LayerNormalization", [Inputs, ones, g.Weight("zeros", new float[d], d)], "ln", "", ("axis", -1L), ("epsilon", c.NormEps))
            : g.Node("SimplifiedLayerNormalization", [Inputs, ones], "ln", "", ("axis", -1L), ("epsilon", c.NormEps));
        var width = 3 * q + 2 * f;
        var weights = new float[(long)layers * d * width];
        var offsets = gpt2 ? new float[layers * width] : null;
        for (var l = 0; l < layers; l++)
        {
            var w = ProjectionWeight(def, def.Layers[l], d); // [d, width]
            var (scale, bias) = inputNorms[def.Layers[l].Layer];
            for (var i = 0; i < d; i++)
            {
                for (var j = 0; j < width; j++) weights[((long)l * d + i) * width + j] = scale[i] * w[i * width + j];
                if (offsets is not null) for (var j = 0; j < width; j++) offsets[l * width + j] += bias![i] * w[i * width + j];
            }
        }
        var proj = g.Node("MatMul", [normed, g.Weight("proj_w", weights, layers, d, width)], gpt2 ? "proj_mm" : "proj");
        if (offsets is not null) proj = g.Node("Add", [proj, g.Weight("proj_b", offsets, layers, 1, width)], "proj");

        // Rotary, cache write, attention over (row, layer) pairs and SwiGLU in one operator, whose output is laid out
        // [batch, L·(q + f)]: with the layers' [O; Down] stacked [L·(q + f), side], one MatMul gives s_L = Σ_l (o_l + f_l).
        var (cos, sin) = rotary is not null ? BlockGraph.RotaryCaches(g, rotary) : (g.Weight("cos_cache", [1f], 1, 1), g.Weight("sin_cache", [0f], 1, 1));
        var parameters = g.Weight("side_params", [1f / MathF.Sqrt(def.HeadDim), rotary?.Dim ?? 0], Rewards.OtterSideStepOp.ParameterCount);
        var mixed = g.Node(Rewards.OtterSideStepOp.Name, [proj, BlockGraph.PastKey, BlockGraph.PastValue, PositionIds, cos, sin, parameters],
            "mixed", Rewards.OtterSideStepOp.Domain);
        var outWeights = Stack(def.Layers.Select(l => Concat(Transpose(l.O, side, q), Transpose(l.Down, side, f))));
        g.Node("MatMul", [mixed, g.Weight("out_w", outWeights, (long)layers * (q + f), side)], SideOut);
        g.Output(SideOut, DT.Float, "batch", side);
        return g.ToBytes();
    }

    /// <summary>[d, 3q + 2f]: Q, K, V, Gate and Up of one layer side by side (MatMul's [in, out]), one MatMul for all five.</summary>
    private static float[] ProjectionWeight(OtterDefinition def, OtterLayer layer, int d)
    {
        int q = def.NumHeads * def.HeadDim, f = def.IntermediateSize;
        return Transpose(Concat(layer.Q, layer.K, layer.V, layer.Gate, layer.Up), 3 * q + 2 * f, d);
    }

    /// <summary>The base's rotation of q and k at <c>position_ids</c> (the Otter reader holds a rotary side network's head width to the base's).</summary>
    private static (string Q, string K) Rotate(GraphBuilder g, ModelConfig c, RotaryTables? rotary, OtterDefinition def, string q, string k)
    {
        if (rotary is null) return (q, k);
        var caches = BlockGraph.RotaryCaches(g, rotary);
        return (BlockGraph.PositionQueryOrKey(g, c, q, null, def.NumHeads, rotary, caches, "q"),
                BlockGraph.PositionQueryOrKey(g, c, k, null, def.NumHeads, rotary, caches, "k"));
    }

    private static string SwiGlu(GraphBuilder g, string gate, string up) =>
        g.Node("Mul", [g.Node("Mul", [gate, g.Node("Sigmoid", [gate], "sig")], "silu"), up], "swiglu");

    private static float[] Stack(IEnumerable<float[]> parts) => parts.SelectMany(p => p).ToArray();

    private static void DeclareCache(GraphBuilder g, OtterDefinition def, int maxContext, bool output, string batch = "batch")
    {
        if (output)
        {
            g.Output(BlockGraph.PresentKey, DT.Float, batch, def.NumHeads, maxContext, def.HeadDim);
            g.Output(BlockGraph.PresentValue, DT.Float, batch, def.NumHeads, maxContext, def.HeadDim);
            return;
        }
        g.Input(BlockGraph.PastKey, DT.Float, batch, def.NumHeads, maxContext, def.HeadDim);
        g.Input(BlockGraph.PastValue, DT.Float, batch, def.NumHeads, maxContext, def.HeadDim);
    }

    private static float[] Concat(params float[][] parts) => parts.SelectMany(p => p).ToArray();

    /// <summary>[rows, cols] row-major (PyTorch's [out, in]) → [cols, rows] (MatMul's [in, out]).</summary>
    private static float[] Transpose(float[] m, int rows, int cols)
    {
        var t = new float[m.Length];
        for (var r = 0; r < rows; r++)
        {
            for (var k = 0; k < cols; k++) t[k * rows + r] = m[r * cols + k];
        }
        return t;
    }
}
