using Serving.Checkpoints;
using DT = Onnx.TensorProto.Types.DataType;

namespace Serving.Inference.Graphs;

/// <summary>
/// Every block in one graph, for decode steps of base-model rows (<see cref="Runtime.RuntimeOptions.FusedDecode"/>):
/// inputs as a block's, with <c>past_key_{l}</c>/<c>past_value_{l}</c> per layer (bound in place like the blocks'),
/// output <c>hidden_out</c> [batch, seq, d] (the head runs in its own session). The projection weights are shared
/// placeholders (<see cref="GraphBuilder.ShareWeights"/>) named <c>l{layer}/…</c>: the session reads the per-layer
/// sessions' copies through <c>AddInitializer</c>.
/// </summary>
internal static class FusedGraph
{
    public static string PastKey(int l) => $"past_key_{l}";
    public static string PastValue(int l) => $"past_value_{l}";
    public static string PresentKey(int l) => $"present_key_{l}";
    public static string PresentValue(int l) => $"present_value_{l}";

    public static (byte[] Model, List<(string Name, Array Values, long[] Dims)> Shared) Build(ModelConfig c, IReadOnlyList<LayerWeights> layers, int maxContext, RotaryTables? rotary, bool cpuNorm = false)
    {
        if (layers.Count != c.NumLayers) throw new ArgumentException($"{layers.Count} layers' weights for {c.NumLayers} layers", nameof(layers));
        var g = new GraphBuilder("fused_blocks") { ShareWeights = true };
        BlockGraph.DeclareSharedInputs(g, c);
        g.Input(BlockGraph.Hidden, DT.Float, "batch", "seq", c.HiddenSize);
        var hidden = BlockGraph.Hidden;
        for (var l = 0; l < c.NumLayers; l++)
        {
            g.Input(PastKey(l), DT.Float, "batch", c.NumKvHeads, maxContext, c.HeadDim);
            g.Input(PastValue(l), DT.Float, "batch", c.NumKvHeads, maxContext, c.HeadDim);
            var next = l == c.NumLayers - 1 ? BlockGraph.HiddenOut : $"h{l + 1}";
            BlockGraph.Add(g, c, layers[l], $"l{l}/", hidden, next, PastKey(l), PastValue(l), PresentKey(l), PresentValue(l), rotary, layer: l, cpuNorm: cpuNorm);
            g.Output(PresentKey(l), DT.Float, "batch", c.NumKvHeads, maxContext, c.HeadDim);
            g.Output(PresentValue(l), DT.Float, "batch", c.NumKvHeads, maxContext, c.HeadDim);
            hidden = next;
        }
        g.Output(BlockGraph.HiddenOut, DT.Float, "batch", "seq", c.HiddenSize);
        return (g.ToBytes(), g.SharedWeights);
    }
}
