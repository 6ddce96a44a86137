using Serving.Checkpoints;
using DT = Onnx.TensorProto.Types.DataType;

namespace Serving.Inference.Graphs;

/// <summary>
/// CALM's state propagation for one layer: the K/V a block would write for given inputs, without its attention or
/// feed-forward. Inputs: <c>hidden</c> [1, m, d] (each exited token's hidden state at its exit layer), and for rotary
/// models <c>position_ids</c> [1, m]. Outputs: <c>key</c> and <c>value</c> [1, m, KV·hd] (RoPE applied to the keys), which
/// the engine writes into the cache at each token's slot and position. The segmented variant adds each token's adapter
/// update to the projection, as the block does (<see cref="BlockGraph.Segmented"/>, the q/k/v projection's inputs only).
/// </summary>
internal static class KvOnlyGraph
{
    public const string Key = "key";
    public const string Value = "value";

    public static (byte[] Model, List<(string Name, Array Values, long[] Dims)> Shared) Build(ModelConfig c, LayerWeights w, int layer, RotaryTables? rotary, bool segmented)
    {
        int d = c.HiddenSize, hd = c.HeadDim, q = c.NumHeads * hd, kv = c.NumKvHeads * hd;
        var g = new GraphBuilder(segmented ? $"kv_only_{layer}_lora_segmented" : $"kv_only_{layer}") { ShareWeights = true };
        if (c.Architecture == ModelArchitecture.Llama) g.Input(BlockGraph.PositionIds, DT.Int64, "batch", "seq");
        if (segmented)
        {
            var (inDim, outDim) = Adapters.AdapterFactors.Shape(c, Adapters.AdaptedProjection.Qkv);
            g.Input(BlockGraph.LoraPlan, DT.Int64, "lora_plan_length");
            g.Input(BlockGraph.LoraInput(Adapters.AdaptedProjection.Qkv, a: true), DT.Float, "lora_slots", "rank_0", inDim);
            g.Input(BlockGraph.LoraInput(Adapters.AdaptedProjection.Qkv, a: false), DT.Float, "lora_slots", "rank_0", outDim);
            g.Input(BlockGraph.LoraRanks(Adapters.AdaptedProjection.Qkv), DT.Int64, "lora_slots");
        }
        g.Input(BlockGraph.Hidden, DT.Float, "batch", "seq", d);
        var n1 = BlockGraph.Norm(g, c, BlockGraph.Hidden, w.Norm1Weight, w.Norm1Bias, "ln1");
        // The same shared q/k/v weight as the block (one copy per layer); q is computed and dropped.
        var qkv = BlockGraph.Linear(g, n1, w.QkvWeight, w.QkvBias, d, q + 2 * kv, "qkv", w.Quantized?.Qkv, w.Quantized?.AccuracyLevel ?? 0);
        if (segmented) qkv = BlockGraph.AddLora(g, n1, qkv, Adapters.AdaptedProjection.Qkv, "qkv", BlockGraph.Segmented);
        var parts = g.NodeMulti("Split", [qkv, g.Int64s("qkv_split", q, kv, kv)], ["q", "k", Value], "", ("axis", 2L));
        if (rotary is not null)
        {
            var key = BlockGraph.PositionQueryOrKey(g, c, parts[1], w.KNorm, c.NumKvHeads, rotary, BlockGraph.RotaryCaches(g, rotary), "k");
            g.Node("Identity", [key], Key);
        }
        else
        {
            g.Node("Identity", [parts[1]], Key);
        }
        g.Output(Key, DT.Float, "batch", "seq", kv);
        g.Output(Value, DT.Float, "batch", "seq", kv);
        return (g.ToBytes(), g.SharedWeights);
    }
}
