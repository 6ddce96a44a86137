using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using Microsoft.ML.OnnxRuntime;
using Serving.Checkpoints;
using Serving.Inference.Engine;
using Serving.Inference.Graphs;
using Serving.Inference.Numerics;
using Serving.Inference.Sampling;
using DT = Onnx.TensorProto.Types.DataType;

namespace Serving.Inference.EarlyExit;

/// <summary>
/// Geva et al.'s view of the FFN on a restricted vocabulary. A block's feed-forward output is a sum of sub-updates
/// aᵢ·vᵢ (activation × value vector), and each value vector promotes the tokens it is closest to (computed once per
/// model: the top token of E·vᵢ). After a block the token's <see cref="TopSubUpdates"/> strongest sub-updates (|aᵢ|·‖vᵢ‖)
/// add their promoted tokens to its candidate set (kept across its layers, at most <see cref="MaxCandidates"/>); the
/// current top-1 is the best candidate under the head (final norm, then the candidates' rows of the head only — never a
/// full head); the confidence is the share of the sub-updates' strength that promotes that top-1. A layer whose
/// strongest updates still push other tokens is not settled.
/// </summary>
public sealed class UpdateViewCriterion : IExitCriterion
{
    /// <summary>Sub-updates read per layer.</summary>
    public const int TopSubUpdates = 10;

    /// <summary>Candidate tokens kept per token.</summary>
    public const int MaxCandidates = 48;

    private static readonly ConditionalWeakTable<DecoderModel, UpdateViewCriterion> Cache = [];
    private readonly DecoderModel _model;
    private readonly int[][] _promoted;      // [layer][neuron] → token
    private readonly float[][] _valueNorms;  // [layer][neuron] → ‖vᵢ‖

    private UpdateViewCriterion(DecoderModel model)
    {
        _model = model;
        var c = model.Config;
        var down = model.FfnDownWeights;
        if (down.Count == 0) throw new InvalidOperationException("the update view needs the FFN value vectors: load the model with RuntimeOptions.PackedSteps");
        _promoted = new int[c.NumLayers][];
        _valueNorms = new float[c.NumLayers][];
        var f = c.IntermediateSize;
        var d = c.HiddenSize;
        using var so = model.CreateSessionOptions();
        using var session = new InferenceSession(PromotionGraph(model.HeadWeight, c.VocabSize, d), so);
        using var run = new RunOptions();
        const int block = 256;
        for (var l = 0; l < c.NumLayers; l++)
        {
            _promoted[l] = new int[f];
            _valueNorms[l] = new float[f];
            for (var i = 0; i < f; i++) _valueNorms[l][i] = TensorPrimitives.Norm(down[l].AsSpan(i * d, d));
            for (var start = 0; start < f; start += block)
            {
                var n = Math.Min(block, f - start);
                var x = down[l].AsSpan(start * d, n * d).ToArray();
                using var input = OrtValue.CreateTensorValueFromMemory(x, [n, d]);
                using var outputs = session.Run(run, ["values"], [input], ["token"]);
                var tokens = outputs[0].GetTensorDataAsSpan<long>();
                for (var i = 0; i < n; i++) _promoted[l][start + i] = (int)tokens[i];
            }
        }
        ScratchSize = d + f + TopSubUpdates;
    }

    /// <summary>The criterion of <paramref name="model"/> (value-vector tokens computed on first use: one E·V GEMM per layer).</summary>
    public static UpdateViewCriterion For(DecoderModel model) => Cache.GetValue(model, m => new UpdateViewCriterion(m));

    public ExitCriterionKind Kind => ExitCriterionKind.UpdateView;
    public int ScratchSize { get; }
    public int StateSize => 1 + MaxCandidates;

    /// <summary>The token value vector <paramref name="neuron"/> of block <paramref name="layer"/> promotes most (for tests).</summary>
    public int PromotedToken(int layer, int neuron) => _promoted[layer][neuron];

    public float Confidence(ref ExitView view)
    {
        var c = _model.Config;
        var block = view.Layer - 1;
        var f = c.IntermediateSize;
        var d = c.HiddenSize;
        var strength = view.Scratch.Slice(d, f);
        TensorPrimitives.Abs(view.Ffn, strength);
        TensorPrimitives.Multiply(strength, _valueNorms[block], strength);
        Span<int> top = stackalloc int[TopSubUpdates];
        TopSelection.SelectTopK(strength, TopSubUpdates, top);

        // Candidates: the promoted tokens of the strongest sub-updates, accumulated over the token's layers.
        var count = view.State[0];
        var candidates = view.State[1..];
        foreach (var i in top)
        {
            var token = _promoted[block][i];
            if (count < MaxCandidates && !candidates[..count].Contains(token)) candidates[count++] = token;
        }
        view.State[0] = count;

        var normed = view.Scratch[..d];
        var (w, b) = _model.FinalNorm;
        VectorNorms.Apply(view.Hidden, w, b, c.Architecture == ModelArchitecture.Gpt2, c.NormEps, normed);
        var head = _model.HeadWeight;
        var best = -1;
        var bestLogit = float.NegativeInfinity;
        for (var k = 0; k < count; k++)
        {
            var logit = TensorPrimitives.Dot(head.AsSpan(candidates[k] * d, d), normed);
            if (logit > bestLogit || (logit == bestLogit && candidates[k] < best))
            {
                bestLogit = logit;
                best = candidates[k];
            }
        }
        float agree = 0, total = 0;
        foreach (var i in top)
        {
            total += strength[i];
            if (_promoted[block][i] == best) agree += strength[i];
        }
        return total > 0 ? agree / total : 0f;
    }

    /// <summary>values [n, d] → the head row each is closest to by dot product (ArgMax of values · Eᵀ).</summary>
    private static byte[] PromotionGraph(float[] head, int vocab, int d)
    {
        var g = new GraphBuilder("value_vector_tokens");
        g.Input("values", DT.Float, "n", d);
        var logits = g.Node("Gemm", ["values", g.Weight("embedding", head, vocab, d)], "logits", "", ("transB", 1L));
        g.Node("ArgMax", [logits], "token", "", ("axis", 1L), ("keepdims", 0L));
        g.Output("token", DT.Int64, "n");
        return g.ToBytes();
    }
}
