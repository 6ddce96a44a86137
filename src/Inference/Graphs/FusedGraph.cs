using Serving.Checkpoints;
using DT = Onnx.TensorProto.Types.DataType;

namespace Serving.Inference.Graphs;

/// <summary>
/// Every block and the head in one graph, for measuring what the per-layer split costs (the engine runs the split
/// units). Inputs as a block's, with <c>past_key_{l}</c>/<c>past_value_{l}</c> per layer; output <c>logits</c> [batch·seq, V].
/// </summary>
internal static class FusedGraph
{
    public static string PastKey(int l) => $"past_key_{l}";
    public static string PastValue(int l) => $"past_value_{l}";
    public static string PresentKey(int l) => $"present_key_{l}";
    public static string PresentValue(int l) => $"present_value_{l}";

    public static byte[] Build(CheckpointFolder ckpt, int maxContext, RotaryTables? rotary, float[] normWeight, float[]? normBias, float[] headWeight)
    {
        var c = ckpt.Config;
        var g = new GraphBuilder("fused");
        BlockGraph.DeclareSharedInputs(g, c);
        g.Input(BlockGraph.Hidden, DT.Float, "batch", "seq", c.HiddenSize);
        var hidden = BlockGraph.Hidden;
        for (var l = 0; l < c.NumLayers; l++)
        {
            g.Input(PastKey(l), DT.Float, "batch", c.NumKvHeads, maxContext, c.HeadDim);
            g.Input(PastValue(l), DT.Float, "batch", c.NumKvHeads, maxContext, c.HeadDim);
            var next = $"h{l + 1}";
            BlockGraph.Add(g, c, LayerWeights.Read(ckpt, l), $"l{l}/", hidden, next, PastKey(l), PastValue(l), PresentKey(l), PresentValue(l), rotary, layer: l);
            g.Output(PresentKey(l), DT.Float, "batch", c.NumKvHeads, maxContext, c.HeadDim);
            g.Output(PresentValue(l), DT.Float, "batch", c.NumKvHeads, maxContext, c.HeadDim);
            hidden = next;
        }
        var rows = g.Node("Reshape", [hidden, g.Int64s("rows_shape", -1, c.HiddenSize)], "rows");
        HeadGraph.Add(g, c, rows, HeadGraph.Logits, normWeight, normBias, headWeight);
        g.Output(HeadGraph.Logits, DT.Float, "rows", c.VocabSize);
        return g.ToBytes();
    }
}
