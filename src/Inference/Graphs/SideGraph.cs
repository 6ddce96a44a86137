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
/// layer's input only (s_l is only added to), so the L layers are one batched computation: the inputs of every base
/// layer [L, batch, d] (kept by the decoder during the step), per-layer weights stacked [L, …] for batched MatMuls, and
/// one attention whose batch is (row, layer) pairs over the side cache laid out [slot · L + layer, heads, max_ctx,
/// head_dim] (<c>side_seqlens_k</c>/<c>side_position_ids</c> give each pair its row's length and position). The
/// updates are summed over layers. About 25 nodes whatever L is: per-node dispatch, not arithmetic, was most of the
/// side network's cost when it ran layer by layer.</item>
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
    public const string SeqLensK = "side_seqlens_k";
    public const string PositionIds = "side_position_ids";

    /// <summary>Side layer <paramref name="index"/> alone (prefill).</summary>
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
        var (qIn, kIn) = Rotate(g, rotary, def, parts[0], parts[1], BlockGraph.PositionIds);
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

    /// <summary>Every side layer as one batched computation (decode steps of one token per row).</summary>
    public static byte[] BuildStacked(ModelConfig c, OtterDefinition def, IReadOnlyList<(float[] Weight, float[]? Bias)> inputNorms, int maxContext, RotaryTables? rotary)
    {
        int layers = def.Layers.Count, d = c.HiddenSize, q = def.NumHeads * def.HeadDim, side = def.SideSize, f = def.IntermediateSize;
        var g = new GraphBuilder("side_stacked");
        g.Input(Inputs, DT.Float, layers, "batch", d);
        g.Input(SeqLensK, DT.Int32, "pairs");
        g.Input(BlockGraph.TotalSeqLen, DT.Int32);
        if (rotary is not null) g.Input(PositionIds, DT.Int64, "pairs", 1);
        DeclareCache(g, def, maxContext, output: false, batch: "pairs");

        // x = norm_l(h_l) for every layer: the norm without its weight, then the per-layer weight (and bias) broadcast.
        var ones = g.Weight("ones", Enumerable.Repeat(1f, d).ToArray(), d);
        var normWeights = g.Weight("ln_w", Stack(inputNorms.Select(n => n.Weight)), layers, 1, d);
        string x;
        if (c.Architecture == ModelArchitecture.Gpt2)
        {
            var plain = g.Node("LayerNormalization", [Inputs, ones, g.Weight("zeros", new float[d], d)], "ln", "", ("axis", -1L), ("epsilon", c.NormEps));
            x = g.Node("Add", [g.Node("Mul", [plain, normWeights], "ln_scaled"), g.Weight("ln_b", Stack(inputNorms.Select(n => n.Bias!)), layers, 1, d)], "ln_out");
        }
        else
        {
            x = g.Node("Mul", [g.Node("SimplifiedLayerNormalization", [Inputs, ones], "ln", "", ("axis", -1L), ("epsilon", c.NormEps)), normWeights], "ln_out");
        }
        var proj = g.Node("MatMul", [x, g.Weight("proj_w", Stack(def.Layers.Select(l => ProjectionWeight(def, l, d))), layers, d, 3 * q + 2 * f)], "proj");
        var parts = g.NodeMulti("Split", [proj, g.Int64s("proj_split", q, q, q, f, f)], ["q", "k", "v", "gate", "up"], "", ("axis", 2L));

        // Attention over (row, layer) pairs: [L, batch, q] → [batch, L, q] → [batch·L, 1, q].
        var pairsShape = g.Int64s("pairs_shape", -1, 1, q);
        string Pairs(string t, string name) => g.Node("Reshape", [g.Node("Transpose", [t], name + "_t", "", ("perm", new long[] { 1, 0, 2 })), pairsShape], name + "_pairs");
        var (qIn, kIn) = Rotate(g, rotary, def, Pairs(parts[0], "q"), Pairs(parts[1], "k"), PositionIds);
        var attn = g.NodeMulti("GroupQueryAttention",
            [qIn, kIn, Pairs(parts[2], "v"), BlockGraph.PastKey, BlockGraph.PastValue, SeqLensK, BlockGraph.TotalSeqLen],
            ["attn", BlockGraph.PresentKey, BlockGraph.PresentValue], GraphBuilder.MicrosoftDomain,
            ("num_heads", (long)def.NumHeads), ("kv_num_heads", (long)def.NumHeads))[0];
        // [batch·L, 1, q] → [batch, L, q] → [L, batch, q].
        var attnLayers = g.Node("Transpose", [g.Node("Reshape", [attn, g.Int64s("rows_shape", -1, layers, q)], "attn_rows")], "attn_layers", "", ("perm", new long[] { 1, 0, 2 }));
        var o = g.Node("MatMul", [attnLayers, g.Weight("o_w", Stack(def.Layers.Select(l => Transpose(l.O, side, q))), layers, q, side)], "o");
        var ffn = g.Node("MatMul", [SwiGlu(g, parts[3], parts[4]), g.Weight("down_w", Stack(def.Layers.Select(l => Transpose(l.Down, side, f))), layers, f, side)], "down");
        // s_L = Σ_l (o_l + f_l): [L, batch, side] → [1, batch, side] → [batch, 1, side].
        var sum = g.Node("ReduceSum", [g.Node("Add", [o, ffn], "updates"), g.Int64s("layer_axis", 0)], "sum", "", ("keepdims", 1L));
        g.Node("Transpose", [sum], SideOut, "", ("perm", new long[] { 1, 0, 2 }));
        DeclareCache(g, def, maxContext, output: true, batch: "pairs");
        g.Output(SideOut, DT.Float, "batch", 1, side);
        return g.ToBytes();
    }

    /// <summary>[d, 3q + 2f]: Q, K, V, Gate and Up of one layer side by side (MatMul's [in, out]), one MatMul for all five.</summary>
    private static float[] ProjectionWeight(OtterDefinition def, OtterLayer layer, int d)
    {
        int q = def.NumHeads * def.HeadDim, f = def.IntermediateSize;
        return Transpose(Concat(layer.Q, layer.K, layer.V, layer.Gate, layer.Up), 3 * q + 2 * f, d);
    }

    private static (string Q, string K) Rotate(GraphBuilder g, RotaryTables? rotary, OtterDefinition def, string q, string k, string positions)
    {
        if (rotary is null) return (q, k);
        var cos = g.Weight("cos_cache", rotary.Cos, rotary.MaxPositions, def.HeadDim / 2);
        var sin = g.Weight("sin_cache", rotary.Sin, rotary.MaxPositions, def.HeadDim / 2);
        return (g.Node("RotaryEmbedding", [q, positions, cos, sin], "q_rot", GraphBuilder.MicrosoftDomain, ("interleaved", 0L), ("num_heads", (long)def.NumHeads)),
                g.Node("RotaryEmbedding", [k, positions, cos, sin], "k_rot", GraphBuilder.MicrosoftDomain, ("interleaved", 0L), ("num_heads", (long)def.NumHeads)));
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
