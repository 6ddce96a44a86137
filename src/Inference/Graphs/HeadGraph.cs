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

    public static byte[] Build(ModelConfig c, float[] normWeight, float[]? normBias, float[] headWeight,
        QuantizedWeight? quantized = null, int accuracyLevel = 0)
    {
        var g = new GraphBuilder("head");
        g.Input(Hidden, DT.Float, "rows", c.HiddenSize);
        Add(g, c, Hidden, Logits, normWeight, normBias, headWeight, quantized, accuracyLevel);
        g.Output(Logits, DT.Float, "rows", c.VocabSize);
        return g.ToBytes();
    }

    /// <summary>Adds final norm + LM head on 2-D rows [rows, d].</summary>
    public static void Add(GraphBuilder g, ModelConfig c, string hidden, string logits, float[] normWeight, float[]? normBias, float[] headWeight,
        QuantizedWeight? quantized = null, int accuracyLevel = 0)
    {
        var n = BlockGraph.Norm(g, c, hidden, normWeight, normBias, "ln_f");
        string Project(string output) => quantized is null
            ? g.Node("Gemm", [n, g.Weight("lm_head", headWeight, c.VocabSize, c.HiddenSize)], output, "", ("transB", 1L))
            : BlockGraph.QuantizedMatMul(g, n, quantized, accuracyLevel, output);
        if (c.FinalLogitSoftcap is not { } cap)
        {
            Project(logits);
            return;
        }
        // Gemma 2: logits = cap · tanh(logits / cap)
        var raw = Project("raw_logits");
        var capValue = g.Weight("softcap", [cap], 1);
        var tanh = g.Node("Tanh", [g.Node("Div", [raw, capValue], "capped_in")], "capped");
        g.Node("Mul", [tanh, capValue], logits);
    }
}
