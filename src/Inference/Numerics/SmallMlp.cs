using System.Numerics.Tensors;
using Serving.Checkpoints.RewardHeads;

namespace Serving.Inference.Numerics;

/// <summary>
/// A small dense stack evaluated in managed code for one vector (reward heads, exit probes): y = W x + b per layer,
/// the activation between layers, one output. Immutable; callers pass scratch of <see cref="ScratchSize"/> floats.
/// </summary>
internal sealed class SmallMlp
{
    private readonly DenseLayer[] _layers;
    private readonly RewardActivation _activation;

    public SmallMlp(IReadOnlyList<DenseLayer> layers, RewardActivation activation)
    {
        _layers = [.. layers];
        _activation = activation;
        var width = _layers[0].In;
        foreach (var l in _layers) width = Math.Max(width, l.Out);
        ScratchSize = 2 * width;
    }

    /// <summary>Width of the input.</summary>
    public int Input => _layers[0].In;

    public int ScratchSize { get; }

    /// <summary>The stack's single output for <paramref name="x"/> (which may alias the first half of the scratch).</summary>
    public float Evaluate(ReadOnlySpan<float> x, Span<float> scratch)
    {
        var half = ScratchSize / 2;
        var a = scratch[..half];
        var b = scratch[half..];
        var input = x;
        for (var i = 0; i < _layers.Length; i++)
        {
            var layer = _layers[i];
            var output = (i % 2 == 0 ? b : a)[..layer.Out];
            for (var o = 0; o < layer.Out; o++)
            {
                output[o] = TensorPrimitives.Dot(layer.Weight.AsSpan(o * layer.In, layer.In), input) + (layer.Bias?[o] ?? 0f);
            }
            if (i < _layers.Length - 1) Activate(_activation, output);
            input = output;
        }
        return input[0];
    }

    public static void Activate(RewardActivation activation, Span<float> v)
    {
        switch (activation)
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

    /// <summary>erf to ~1e-7 (Numerical Recipes' erfc fit, in double).</summary>
    private static float Erf(float xf)
    {
        double x = xf;
        var t = 1.0 / (1.0 + 0.5 * Math.Abs(x));
        var y = 1 - t * Math.Exp(-x * x - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 +
            t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
        return (float)(x >= 0 ? y : -y);
    }
}

/// <summary>Norms of one vector in managed code, as the model's graphs compute them.</summary>
internal static class VectorNorms
{
    /// <summary>RMSNorm (x / √(mean x² + ε) · w) or, with <paramref name="bias"/>, LayerNorm; into <paramref name="destination"/>.</summary>
    public static void Apply(ReadOnlySpan<float> x, float[] weight, float[]? bias, bool layerNorm, float eps, Span<float> destination)
    {
        var d = x.Length;
        if (layerNorm)
        {
            var mean = TensorPrimitives.Sum(x) / d;
            TensorPrimitives.Subtract(x, mean, destination);
            var variance = TensorPrimitives.Dot(destination, destination) / d;
            TensorPrimitives.Multiply(destination, 1f / MathF.Sqrt(variance + eps), destination);
            TensorPrimitives.Multiply(destination, weight, destination);
            TensorPrimitives.Add(destination, bias!, destination);
            return;
        }
        var meanSquare = TensorPrimitives.Dot(x, x) / d;
        TensorPrimitives.Multiply(x, 1f / MathF.Sqrt(meanSquare + eps), destination);
        TensorPrimitives.Multiply(destination, weight, destination);
    }
}
