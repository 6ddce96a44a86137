using System.Numerics.Tensors;
using Serving.Checkpoints;
using Serving.Checkpoints.RewardHeads;
using Serving.Inference.Engine;

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
    private readonly DenseLayer[] _layers;
    private readonly RewardActivation _activation;
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
        _layers = [.. definition.Layers];
        _activation = definition.Activation;
        if (definition.Input == RewardHeadInput.FinalNorm)
        {
            (_normWeight, _normBias) = model.FinalNorm;
            _layerNorm = c.Architecture == ModelArchitecture.Gpt2;
            _eps = c.NormEps;
        }
        ScratchSize = Scratch(c.HiddenSize, _layers);
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
        _layers = [.. definition.HeadLayers];
        _activation = definition.Activation;
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
        ScratchSize = Scratch(definition.SideSize, _layers);
    }

    private static int Scratch(int width, DenseLayer[] layers)
    {
        foreach (var l in layers) width = Math.Max(width, l.Out);
        return 2 * width;
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
        var d = hidden.Length;
        var a = scratch[..(ScratchSize / 2)];
        var b = scratch[(ScratchSize / 2)..];
        var x = a[..d];
        if (_normWeight is null)
        {
            hidden.CopyTo(x);
        }
        else if (_layerNorm)
        {
            var mean = TensorPrimitives.Sum(hidden) / d;
            TensorPrimitives.Subtract(hidden, mean, x);
            var variance = TensorPrimitives.Dot(x, x) / d;
            TensorPrimitives.Multiply(x, 1f / MathF.Sqrt(variance + _eps), x);
            TensorPrimitives.Multiply(x, _normWeight, x);
            TensorPrimitives.Add(x, _normBias!, x);
        }
        else
        {
            var meanSquare = TensorPrimitives.Dot(hidden, hidden) / d;
            TensorPrimitives.Multiply(hidden, 1f / MathF.Sqrt(meanSquare + _eps), x);
            TensorPrimitives.Multiply(x, _normWeight, x);
        }
        ReadOnlySpan<float> input = x;
        for (var i = 0; i < _layers.Length; i++)
        {
            var layer = _layers[i];
            var output = (i % 2 == 0 ? b : a)[..layer.Out];
            for (var o = 0; o < layer.Out; o++)
            {
                output[o] = TensorPrimitives.Dot(layer.Weight.AsSpan(o * layer.In, layer.In), input) + (layer.Bias?[o] ?? 0f);
            }
            if (i < _layers.Length - 1) Activate(output);
            input = output;
        }
        return input[0];
    }

    private void Activate(Span<float> v)
    {
        switch (_activation)
        {
            case RewardActivation.Tanh:
                TensorPrimitives.Tanh(v, v);
                break;
            case RewardActivation.Relu:
                TensorPrimitives.Max(v, 0f, v);
                break;
            case RewardActivation.Sigmoid:
                TensorPrimitives.Sigmoid(v, v);
                break;
            case RewardActivation.Silu:
                for (var i = 0; i < v.Length; i++) v[i] = v[i] / (1f + MathF.Exp(-v[i]));
                break;
            case RewardActivation.Gelu:
                // Exact GELU, as torch.nn.GELU() (erf form).
                for (var i = 0; i < v.Length; i++) v[i] = 0.5f * v[i] * (1f + Erf(v[i] / MathF.Sqrt(2f)));
                break;
        }
    }

    /// <summary>erf to ~1e-7 (Abramowitz–Stegun 7.1.26 is too coarse for a 1e-4 reference check; this is a rational fit in double).</summary>
    private static float Erf(float xf)
    {
        double x = xf;
        var t = 1.0 / (1.0 + 0.5 * Math.Abs(x));
        var y = 1 - t * Math.Exp(-x * x - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 +
            t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
        return (float)(x >= 0 ? y : -y);
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
