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

    /// <summary>int64 [na, 2]: (row, position) of each token that uses an adapter, grouped by adapter.</summary>
    public const string LoraIndex = "lora_index";

    /// <summary>int64 [groups]: how many of <see cref="LoraIndex"/> belong to each group (zero for padding groups).</summary>
    public const string LoraSizes = "lora_sizes";

    /// <summary>
    /// <c>loraGroups</c> value of the variant for steps whose every token uses one adapter: <c>y + (x·A₀)·B₀</c> on the
    /// whole batch, without the gather/scatter (three nodes per projection instead of four).
    /// </summary>
    public const int AllTokensOneAdapter = -1;

    /// <summary>Name of group <paramref name="group"/>'s A ([in, r]) or B ([r, out]) input for a projection.</summary>
    public static string LoraInput(Adapters.AdaptedProjection projection, int group, bool a) =>
        $"lora_{(int)projection}_{(a ? 'a' : 'b')}{group}";

    /// <summary>
    /// Builds block <paramref name="layer"/>. With <paramref name="loraGroups"/> &gt; 0 every projection also adds
    /// <c>(x·A_g)·B_g</c> to the rows of group g (see <see cref="AddLora"/>); 0 builds the plain base block.
    /// </summary>
    public static byte[] Build(ModelConfig c, LayerWeights w, int layer, int maxContext, RotaryTables? rotary, int loraGroups = 0) =>
        Build(c, w, layer, maxContext, rotary, loraGroups, shareWeights: false).Model;

    /// <summary>
    /// As <see cref="Build(ModelConfig, LayerWeights, int, int, RotaryTables?, int)"/>; with <paramref name="shareWeights"/>
    /// the projection weights are placeholders the caller supplies per session (returned as <c>Shared</c>).
    /// </summary>
    public static (byte[] Model, List<(string Name, float[] Values, long[] Dims)> Shared) Build(ModelConfig c, LayerWeights w, int layer,
        int maxContext, RotaryTables? rotary, int loraGroups, bool shareWeights)
    {
        var name = loraGroups switch { 0 => $"block_{layer}", AllTokensOneAdapter => $"block_{layer}_lora_all", _ => $"block_{layer}_lora{loraGroups}" };
        var g = new GraphBuilder(name) { ShareWeights = shareWeights };
        DeclareSharedInputs(g, c);
        if (loraGroups != 0) DeclareLoraInputs(g, c, loraGroups);
        g.Input(Hidden, DT.Float, "batch", "seq", c.HiddenSize);
        g.Input(PastKey, DT.Float, "batch", c.NumKvHeads, maxContext, c.HeadDim);
        g.Input(PastValue, DT.Float, "batch", c.NumKvHeads, maxContext, c.HeadDim);
        Add(g, c, w, "", Hidden, HiddenOut, PastKey, PastValue, PresentKey, PresentValue, rotary, loraGroups);
        g.Output(PresentKey, DT.Float, "batch", c.NumKvHeads, maxContext, c.HeadDim);
        g.Output(PresentValue, DT.Float, "batch", c.NumKvHeads, maxContext, c.HeadDim);
        g.Output(HiddenOut, DT.Float, "batch", "seq", c.HiddenSize);
        return (g.ToBytes(), g.SharedWeights);
    }

    /// <summary>Declares the inputs every block reads: sequence lengths and (rotary models) positions.</summary>
    public static void DeclareSharedInputs(GraphBuilder g, ModelConfig c)
    {
        g.Input(SeqLensK, DT.Int32, "batch");
        g.Input(TotalSeqLen, DT.Int32);
        if (c.Architecture == ModelArchitecture.Llama) g.Input(PositionIds, DT.Int64, "batch", "seq");
    }

    /// <summary>Declares the adapter inputs of a block with <paramref name="groups"/> groups.</summary>
    private static void DeclareLoraInputs(GraphBuilder g, ModelConfig c, int groups)
    {
        if (groups == AllTokensOneAdapter)
        {
            groups = 1;
        }
        else
        {
            g.Input(LoraIndex, DT.Int64, "lora_tokens", 2);
            g.Input(LoraSizes, DT.Int64, groups);
        }
        for (var p = 0; p < Adapters.AdapterFactors.ProjectionCount; p++)
        {
            var projection = (Adapters.AdaptedProjection)p;
            var (inDim, outDim) = Adapters.AdapterFactors.Shape(c, projection);
            for (var k = 0; k < groups; k++)
            {
                g.Input(LoraInput(projection, k, a: true), DT.Float, inDim, $"rank_{p}_{k}");
                g.Input(LoraInput(projection, k, a: false), DT.Float, $"rank_{p}_{k}", outDim);
            }
        }
    }

    /// <summary>
    /// Adds the per-group low-rank updates to projection output <paramref name="y"/> (input <paramref name="x"/>):
    /// the adapted tokens are gathered by (row, position) with GatherND, split into their groups, each group multiplied
    /// by its own A then B (bound directly from slot storage, so a rank-0 pair adds nothing), and the results added back
    /// into the base output with ScatterND(reduction = add). Tokens of rows without an adapter are not touched. Four
    /// nodes per projection with one group (every node costs microseconds at batch 1).
    /// </summary>
    private static string AddLora(GraphBuilder g, string x, string y, Adapters.AdaptedProjection projection, string name, int groups)
    {
        if (groups == AllTokensOneAdapter)
        {
            var low = g.Node("MatMul", [x, LoraInput(projection, 0, a: true)], name + "_lxa0");
            var delta0 = g.Node("MatMul", [low, LoraInput(projection, 0, a: false)], name + "_ld0");
            return g.Node("Add", [y, delta0], name + "_lora");
        }
        var xs = g.Node("GatherND", [x, LoraIndex], name + "_lxg");
        string[] parts;
        if (groups == 1)
        {
            parts = [xs];
        }
        else
        {
            var names = new string[groups];
            for (var k = 0; k < groups; k++) names[k] = $"{name}_lxp{k}";
            parts = g.NodeMulti("Split", [xs, LoraSizes], names, "", ("axis", 0L));
        }
        var deltas = new string[groups];
        for (var k = 0; k < groups; k++)
        {
            var low = g.Node("MatMul", [parts[k], LoraInput(projection, k, a: true)], $"{name}_lxa{k}");
            deltas[k] = g.Node("MatMul", [low, LoraInput(projection, k, a: false)], $"{name}_ld{k}");
        }
        var delta = groups == 1 ? deltas[0] : g.Node("Concat", deltas, name + "_ld", "", ("axis", 0L));
        return g.Node("ScatterND", [y, LoraIndex, delta], name + "_lora", "", ("reduction", "add"));
    }

    /// <summary>Adds one block's nodes to <paramref name="g"/>, naming its internals with <paramref name="prefix"/>.</summary>
    public static void Add(GraphBuilder g, ModelConfig c, LayerWeights w, string prefix, string hidden, string hiddenOut,
        string pastKey, string pastValue, string presentKey, string presentValue, RotaryTables? rotary, int loraGroups = 0)
    {
        int d = c.HiddenSize, hd = c.HeadDim, q = c.NumHeads * hd, kv = c.NumKvHeads * hd, f = c.IntermediateSize;
        var llama = c.Architecture == ModelArchitecture.Llama;
        string N(string s) => prefix + s;

        // Attention
        var n1 = Norm(g, c, hidden, w.Norm1Weight, w.Norm1Bias, N("ln1"));
        var qkv = Linear(g, n1, w.QkvWeight, w.QkvBias, d, q + 2 * kv, N("qkv"));
        if (loraGroups != 0) qkv = AddLora(g, n1, qkv, Adapters.AdaptedProjection.Qkv, N("qkv"), loraGroups);
        var parts = g.NodeMulti("Split", [qkv, g.Int64s(N("qkv_split"), q, kv, kv)], [N("q"), N("k"), N("v")], "", ("axis", 2L));
        string qIn = parts[0], kIn = parts[1];
        if (llama)
        {
            var cos = g.Weight(N("cos_cache"), rotary!.Cos, rotary.MaxPositions, hd / 2);
            var sin = g.Weight(N("sin_cache"), rotary.Sin, rotary.MaxPositions, hd / 2);
            qIn = g.Node("RotaryEmbedding", [qIn, PositionIds, cos, sin], N("q_rot"), GraphBuilder.MicrosoftDomain, ("interleaved", 0L), ("num_heads", (long)c.NumHeads));
            kIn = g.Node("RotaryEmbedding", [kIn, PositionIds, cos, sin], N("k_rot"), GraphBuilder.MicrosoftDomain, ("interleaved", 0L), ("num_heads", (long)c.NumKvHeads));
        }
        var attn = g.NodeMulti("GroupQueryAttention",
            [qIn, kIn, parts[2], pastKey, pastValue, SeqLensK, TotalSeqLen],
            [N("attn"), presentKey, presentValue], GraphBuilder.MicrosoftDomain,
            ("num_heads", (long)c.NumHeads), ("kv_num_heads", (long)c.NumKvHeads))[0];
        var o = Linear(g, attn, w.OutWeight, w.OutBias, q, d, N("o"));
        if (loraGroups != 0) o = AddLora(g, attn, o, Adapters.AdaptedProjection.Out, N("o"), loraGroups);
        var x2 = g.Node("Add", [hidden, o], N("resid1"));

        // Feed-forward
        var n2 = Norm(g, c, x2, w.Norm2Weight, w.Norm2Bias, N("ln2"));
        string act;
        if (llama)
        {
            var gu = Linear(g, n2, w.UpWeight, w.UpBias, d, 2 * f, N("gate_up"));
            if (loraGroups != 0) gu = AddLora(g, n2, gu, Adapters.AdaptedProjection.Up, N("gate_up"), loraGroups);
            var gates = g.NodeMulti("Split", [gu, g.Int64s(N("gu_split"), f, f)], [N("gate"), N("up")], "", ("axis", 2L));
            var silu = g.Node("Mul", [gates[0], g.Node("Sigmoid", [gates[0]], N("sig"))], N("silu"));
            act = g.Node("Mul", [silu, gates[1]], N("swiglu"));
        }
        else
        {
            var fc = g.Node("MatMul", [n2, g.ShareableWeight(N("fc_w"), w.UpWeight, d, f)], N("fc"));
            var fcBias = g.Weight(N("fc_b"), w.UpBias!, f);
            if (loraGroups != 0)
            {
                // FastGelu takes the bias separately; the update must land before the activation.
                fc = AddLora(g, n2, fc, Adapters.AdaptedProjection.Up, N("fc"), loraGroups);
            }
            act = g.Node("FastGelu", [fc, fcBias], N("gelu"), GraphBuilder.MicrosoftDomain);
        }
        var m = Linear(g, act, w.DownWeight, w.DownBias, f, d, N("down"));
        if (loraGroups != 0) m = AddLora(g, act, m, Adapters.AdaptedProjection.Down, N("down"), loraGroups);
        g.Node("Add", [x2, m], hiddenOut);
    }

    internal static string Norm(GraphBuilder g, ModelConfig c, string x, float[] weight, float[]? bias, string name)
    {
        var d = c.HiddenSize;
        var scale = g.Weight(name + "_w", weight, d);
        if (c.Architecture == ModelArchitecture.Gpt2)
        {
            return g.Node("LayerNormalization", [x, scale, g.Weight(name + "_b", bias!, d)], name, "", ("axis", -1L), ("epsilon", c.NormEps));
        }
        return g.Node("SimplifiedLayerNormalization", [x, scale], name, "", ("axis", -1L), ("epsilon", c.NormEps));
    }

    private static string Linear(GraphBuilder g, string x, float[] weight, float[]? bias, int inDim, int outDim, string name)
    {
        var y = g.Node("MatMul", [x, g.ShareableWeight(name + "_w", weight, inDim, outDim)], bias is null ? name : name + "_mm");
        return bias is null ? y : g.Node("Add", [y, g.Weight(name + "_b", bias, outDim)], name);
    }
}

/// <summary>Rotary cos/sin tables [max_positions, head_dim/2] as Hugging Face's Llama computes them (fp32 angles).</summary>
internal sealed class RotaryTables
{
    public RotaryTables(int maxPositions, int headDim, float theta)
    {
        MaxPositions = maxPositions;
        var half = headDim / 2;
        Cos = new float[maxPositions * half];
        Sin = new float[maxPositions * half];
        for (var i = 0; i < half; i++)
        {
            // inv_freq = 1 / θ^(2i/hd), computed in fp32 like transformers' default rope init
            var invFreq = 1.0f / MathF.Pow(theta, 2f * i / headDim);
            for (var p = 0; p < maxPositions; p++)
            {
                var angle = (float)p * invFreq;
                Cos[p * half + i] = MathF.Cos(angle);
                Sin[p * half + i] = MathF.Sin(angle);
            }
        }
    }

    public int MaxPositions { get; }
    public float[] Cos { get; }
    public float[] Sin { get; }
}
