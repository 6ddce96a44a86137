using Serving.Checkpoints;
using Serving.Checkpoints.RewardHeads;
using Serving.Inference.Engine;
using Serving.Inference.Numerics;

namespace Serving.Inference.Rewards;

/// <summary>
/// A reward head ready to run beside a model: per position, the hidden state at <see cref="Layer"/> (optionally through
/// the base's final norm) goes through the head's small MLP to one score, which <see cref="RewardState"/> pools into the
/// reward of every prefix. Evaluated in managed code on the hidden states a decode step already computes (no extra
/// pass, the logits untouched). The full Otter form (<see cref="Side"/>) reads its side network's stream after the last
/// layer instead, through the side network's own norm. Immutable and shareable; callers pass their own scratch of
/// <see cref="ScratchSize"/>.
/// </summary>
public sealed class RewardHead : IDisposable
{
    private readonly SmallMlp _mlp;
    private readonly float[]? _normWeight;
    private readonly float[]? _normBias;
    private readonly bool _layerNorm;
    private readonly float _eps;

    /// <summary>Binds <paramref name="definition"/> (validated against <paramref name="model"/>'s config) to the model's final norm.</summary>
    public RewardHead(RewardHeadDefinition definition, DecoderModel model, string key)
    {
        ArgumentNullException.ThrowIfNull(definition);
        ArgumentNullException.ThrowIfNull(model);
        var c = model.Config;
        if (definition.Layer < 0 || definition.Layer > c.NumLayers) throw new ArgumentException($"layer {definition.Layer} is outside 0..{c.NumLayers}", nameof(definition));
        if (definition.Layers[0].In != c.HiddenSize) throw new ArgumentException($"the head reads {definition.Layers[0].In} values; the model's hidden size is {c.HiddenSize}", nameof(definition));
        Definition = definition;
        Key = key;
        Layer = definition.Layer;
        Pooling = definition.Pooling;
        _mlp = new SmallMlp(definition.Layers, definition.Activation);
        if (definition.Input == RewardHeadInput.FinalNorm)
        {
            (_normWeight, _normBias) = model.FinalNorm;
            _layerNorm = c.Architecture == ModelArchitecture.Gpt2;
            _eps = c.NormEps;
        }
        ScratchSize = _mlp.ScratchSize;
    }

    /// <summary>The full Otter form: <paramref name="definition"/>'s side network bound to <paramref name="model"/> (sessions built now), its head on the side stream.</summary>
    public RewardHead(OtterDefinition definition, DecoderModel model, string key)
    {
        ArgumentNullException.ThrowIfNull(definition);
        ArgumentNullException.ThrowIfNull(model);
        Side = new OtterNetwork(definition, model);
        Key = key;
        Layer = model.Config.NumLayers;
        Pooling = definition.Pooling;
        _mlp = new SmallMlp(definition.HeadLayers, definition.Activation);
        _normWeight = definition.HeadNorm;
        _eps = definition.NormEps;
        Definition = new RewardHeadDefinition
        {
            BaseModel = definition.BaseModel,
            Label = definition.Label,
            Layer = Layer,
            Input = RewardHeadInput.FinalNorm,
            Pooling = definition.Pooling,
            Activation = definition.Activation,
            Layers = definition.HeadLayers,
        };
        ScratchSize = _mlp.ScratchSize;
    }

    /// <summary>The Otter side network this head reads (null: a head on the base's own hidden states).</summary>
    public OtterNetwork? Side { get; }

    /// <summary>Releases the side network's sessions (a head-only head holds none).</summary>
    public void Dispose() => Side?.Dispose();

    /// <summary>Identifies the head's content (e.g. <c>tenant/name@version</c>).</summary>
    public string Key { get; }

    public RewardHeadDefinition Definition { get; }

    /// <summary>The hidden state read: 0 = embedding output, l = after block l.</summary>
    public int Layer { get; }

    public RewardPooling Pooling { get; }

    /// <summary>Floats of scratch <see cref="Score"/> needs.</summary>
    public int ScratchSize { get; }

    /// <summary>The score of one position whose hidden state at <see cref="Layer"/> (or side stream, for the Otter form) is <paramref name="hidden"/>.</summary>
    public float Score(ReadOnlySpan<float> hidden, Span<float> scratch)
    {
        var x = scratch[.._mlp.ScratchSize][..hidden.Length];
        if (_normWeight is null) hidden.CopyTo(x);
        else VectorNorms.Apply(hidden, _normWeight, _normBias, _layerNorm, _eps, x);
        return _mlp.Evaluate(x, scratch[.._mlp.ScratchSize]);
    }
}

/// <summary>A row's reward so far: the pooled scores of the positions its head has seen.</summary>
public struct RewardState
{
    private double _sum;
    private float _last;

    /// <summary>Positions scored.</summary>
    public int Count { get; private set; }

    /// <summary>Adds the score of the next position.</summary>
    public void Add(float score)
    {
        _sum += score;
        _last = score;
        Count++;
    }

    /// <summary>The reward of the prefix scored so far (NaN before any position).</summary>
    public readonly float Value(RewardPooling pooling) => Count == 0 ? float.NaN : pooling switch
    {
        RewardPooling.Sum => (float)_sum,
        RewardPooling.Mean => (float)(_sum / Count),
        _ => _last,
    };

    /// <summary>The reward after one more position scoring <paramref name="score"/> (the state unchanged).</summary>
    public readonly float ValueWith(float score, RewardPooling pooling) => pooling switch
    {
        RewardPooling.Sum => (float)(_sum + score),
        RewardPooling.Mean => (float)((_sum + score) / (Count + 1)),
        _ => score,
    };
}
