using System.Numerics.Tensors;
using Serving.Checkpoints;
using Serving.Checkpoints.ExitProbes;
using Serving.Inference.Engine;
using Serving.Inference.Numerics;

namespace Serving.Inference.EarlyExit;

/// <summary>A trained probe per layer (<see cref="ExitProbeDefinition"/>): sigmoid of its logit. Layers without a probe never exit.</summary>
public sealed class ProbeCriterion : IExitCriterion
{
    private readonly SmallMlp?[] _probes;
    private readonly (float[] Weight, float[]? Bias)? _norm;
    private readonly bool _layerNorm;
    private readonly float _eps;

    public ProbeCriterion(ExitProbeDefinition definition, DecoderModel model)
    {
        var c = model.Config;
        _probes = new SmallMlp?[c.NumLayers];
        foreach (var (layer, dense) in definition.Probes) _probes[layer] = new SmallMlp(dense, definition.Activation);
        if (definition.FinalNorm) _norm = model.FinalNorm;
        _layerNorm = c.Architecture == ModelArchitecture.Gpt2;
        _eps = c.NormEps;
        var widest = c.HiddenSize;
        foreach (var p in _probes) widest = Math.Max(widest, p?.ScratchSize ?? 0);
        ScratchSize = c.HiddenSize + widest;
        RecommendedThreshold = definition.RecommendedThreshold;
    }

    public ExitCriterionKind Kind => ExitCriterionKind.Probe;
    public int ScratchSize { get; }
    public int StateSize => 0;

    /// <summary>The threshold the probe's file recommends, if any.</summary>
    public double? RecommendedThreshold { get; }

    public float Confidence(ref ExitView view)
    {
        if (view.Layer >= _probes.Length || _probes[view.Layer] is not { } probe) return float.NegativeInfinity;
        var d = view.Hidden.Length;
        var input = view.Hidden;
        if (_norm is { } n)
        {
            var normed = view.Scratch[..d];
            VectorNorms.Apply(view.Hidden, n.Weight, n.Bias, _layerNorm, _eps, normed);
            input = normed;
        }
        var logit = probe.Evaluate(input, view.Scratch[d..]);
        return 1f / (1f + MathF.Exp(-logit));
    }
}

/// <summary>State saturation (CALM): cos(hidden[l], hidden[l−1]); a block that barely turns the state changes little.</summary>
public sealed class CosineCriterion : IExitCriterion
{
    public static readonly CosineCriterion Instance = new();

    public ExitCriterionKind Kind => ExitCriterionKind.Cosine;
    public int ScratchSize => 0;
    public int StateSize => 0;

    public float Confidence(ref ExitView view) => TensorPrimitives.CosineSimilarity(view.Hidden, view.Previous);
}

/// <summary>
/// The full head's softmax margin p₁ − p₂ at this layer (final norm, then the LM head over the whole vocabulary): what
/// the cheap criteria are measured against. Costs a full head per token and layer.
/// </summary>
public sealed class MarginCriterion(DecoderModel model) : IExitCriterion
{
    private readonly ModelConfig _c = model.Config;

    public ExitCriterionKind Kind => ExitCriterionKind.Margin;
    public int ScratchSize => _c.HiddenSize + _c.VocabSize;
    public int StateSize => 0;

    public float Confidence(ref ExitView view)
    {
        var d = _c.HiddenSize;
        var normed = view.Scratch[..d];
        var (w, b) = model.FinalNorm;
        VectorNorms.Apply(view.Hidden, w, b, _c.Architecture == ModelArchitecture.Gpt2, _c.NormEps, normed);
        var logits = view.Scratch.Slice(d, _c.VocabSize);
        var head = model.HeadWeight;
        for (var v = 0; v < logits.Length; v++) logits[v] = TensorPrimitives.Dot(head.AsSpan(v * d, d), normed);
        var max = TensorPrimitives.Max(logits);
        var second = float.NegativeInfinity;
        var seenMax = false;
        foreach (var x in logits)
        {
            if (x == max && !seenMax) seenMax = true;
            else if (x > second) second = x;
        }
        // p₁ − p₂ = (1 − e^(x₂ − x₁)) / Σ e^(x − x₁)
        TensorPrimitives.Subtract(logits, max, logits);
        TensorPrimitives.Exp(logits, logits);
        return (1f - MathF.Exp(second - max)) / TensorPrimitives.Sum(logits);
    }
}
