using Serving.Checkpoints;
using DT = Onnx.TensorProto.Types.DataType;

namespace Serving.Inference.Graphs;

/// <summary>
/// The head unit: final norm then the LM head (then soft-capping where the model has it), on rows of hidden states:
/// <c>hidden</c> [rows, d] → <c>logits</c> [rows, V].
/// The head weight stays [V, d] as stored (Gemm with transB), so a tied embedding needs no transposed copy.
/// </summary>
internal static class HeadGraph
{
    public const string Hidden = "hidden";
    public const string Logits = "logits";

    public static byte[] Build(ModelConfig c, float[] normWeight, float[]? normBias, float[] headWeight)
    {
        var g = new GraphBuilder("head");
        g.Input(Hidden, DT.Float, "rows", c.HiddenSize);
        Add(g, c, Hidden, Logits, normWeight, normBias, headWeight);
        g.Output(Logits, DT.Float, "rows", c.VocabSize);
        return g.ToBytes();
    }

    /// <summary>Adds final norm + LM head on 2-D rows [rows, d].</summary>
    public static void Add(GraphBuilder g, ModelConfig c, string hidden, string logits, float[] normWeight, float[]? normBias, float[] headWeight)
    {
        var n = BlockGraph.Norm(g, c, hidden, normWeight, normBias, "ln_f");
        if (c.FinalLogitSoftcap is not { } cap)
        {
            g.Node("Gemm", [n, g.Weight("lm_head", headWeight, c.VocabSize, c.HiddenSize)], logits, "", ("transB", 1L));
            return;
        }
        // Gemma 2: logits = cap · tanh(logits / cap)
        var raw = g.Node("Gemm", [n, g.Weight("lm_head", headWeight, c.VocabSize, c.HiddenSize)], "raw_logits", "", ("transB", 1L));
        var capValue = g.Weight("softcap", [cap], 1);
        var tanh = g.Node("Tanh", [g.Node("Div", [raw, capValue], "capped_in")], "capped");
        g.Node("Mul", [tanh, capValue], logits);
    }
}
