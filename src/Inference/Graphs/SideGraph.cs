using Serving.Checkpoints;
using Serving.Checkpoints.RewardHeads;
using DT = Onnx.TensorProto.Types.DataType;

namespace Serving.Inference.Graphs;

/// <summary>
/// One layer of an Otter side network as a standalone ONNX model. Inputs: <c>hidden</c> [batch, seq, d] (the base
/// layer's input h_l, read only), <c>side</c> [batch, seq, side] (s_l), the side network's own
/// <c>past_key</c>/<c>past_value</c> [batch, heads, max_ctx, head_dim] (bound to the same buffers as the presents),
/// and the step's <c>seqlens_k</c>, <c>total_seq_len</c> and (rotary models) <c>position_ids</c>, exactly as a block
/// takes them. Output <c>side_out</c> = s_l + o + f with x = norm_l(h_l) (the base layer's own input norm),
/// o = attention(x·Qᵀ, x·Kᵀ, x·Vᵀ)·Oᵀ (the base's RoPE on q and k) and f = (silu(x·Gateᵀ) ⊙ x·Upᵀ)·Downᵀ.
/// Nothing the base computes is an input it writes, so the base's logits cannot change.
/// </summary>
internal static class SideGraph
{
    public const string Side = "side";
    public const string SideOut = "side_out";

    public static byte[] Build(ModelConfig c, OtterDefinition def, OtterLayer layer, (float[] Weight, float[]? Bias) inputNorm, int index, int maxContext, RotaryTables? rotary)
    {
        int d = c.HiddenSize, q = def.NumHeads * def.HeadDim, side = def.SideSize, f = def.IntermediateSize;
        var g = new GraphBuilder($"side_{index}");
        BlockGraph.DeclareSharedInputs(g, c);
        g.Input(BlockGraph.Hidden, DT.Float, "batch", "seq", d);
        g.Input(Side, DT.Float, "batch", "seq", side);
        g.Input(BlockGraph.PastKey, DT.Float, "batch", def.NumHeads, maxContext, def.HeadDim);
        g.Input(BlockGraph.PastValue, DT.Float, "batch", def.NumHeads, maxContext, def.HeadDim);

        var x = BlockGraph.Norm(g, c, BlockGraph.Hidden, inputNorm.Weight, inputNorm.Bias, "ln");
        var qkv = g.Node("MatMul", [x, g.Weight("qkv_w", Transpose(Concat(layer.Q, layer.K, layer.V), 3 * q, d), d, 3 * q)], "qkv");
        var parts = g.NodeMulti("Split", [qkv, g.Int64s("qkv_split", q, q, q)], ["q", "k", "v"], "", ("axis", 2L));
        string qIn = parts[0], kIn = parts[1];
        if (rotary is not null)
        {
            // The Otter reader holds a rotary side network's head width to the base's, so the base's rotation applies.
            var caches = BlockGraph.RotaryCaches(g, rotary);
            qIn = BlockGraph.PositionQueryOrKey(g, c, qIn, null, def.NumHeads, rotary, caches, "q");
            kIn = BlockGraph.PositionQueryOrKey(g, c, kIn, null, def.NumHeads, rotary, caches, "k");
        }
        var attn = g.NodeMulti("GroupQueryAttention",
            [qIn, kIn, parts[2], BlockGraph.PastKey, BlockGraph.PastValue, BlockGraph.SeqLensK, BlockGraph.TotalSeqLen],
            ["attn", BlockGraph.PresentKey, BlockGraph.PresentValue], GraphBuilder.MicrosoftDomain,
            ("num_heads", (long)def.NumHeads), ("kv_num_heads", (long)def.NumHeads))[0];
        var o = g.Node("MatMul", [attn, g.Weight("o_w", Transpose(layer.O, side, q), q, side)], "o");
        var gu = g.Node("MatMul", [x, g.Weight("gu_w", Transpose(Concat(layer.Gate, layer.Up), 2 * f, d), d, 2 * f)], "gate_up");
        var gates = g.NodeMulti("Split", [gu, g.Int64s("gu_split", f, f)], ["gate", "up"], "", ("axis", 2L));
        var silu = g.Node("Mul", [gates[0], g.Node("Sigmoid", [gates[0]], "sig")], "silu");
        var act = g.Node("Mul", [silu, gates[1]], "swiglu");
        var ffn = g.Node("MatMul", [act, g.Weight("down_w", Transpose(layer.Down, side, f), f, side)], "down");
        g.Node("Add", [g.Node("Add", [Side, o], "resid"), ffn], SideOut);

        g.Output(BlockGraph.PresentKey, DT.Float, "batch", def.NumHeads, maxContext, def.HeadDim);
        g.Output(BlockGraph.PresentValue, DT.Float, "batch", def.NumHeads, maxContext, def.HeadDim);
        g.Output(SideOut, DT.Float, "batch", "seq", side);
        return g.ToBytes();
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
