using Microsoft.ML.OnnxRuntime;
using Serving.Inference.Graphs;
using Serving.Inference.Numerics;
using Serving.Inference.Runtime;
using Xunit;
using DT = Onnx.TensorProto.Types.DataType;

namespace Serving.Inference.Tests.Numerics;

/// <summary>
/// The C# residual-sum + LayerNorm operator against an independent float64 statement of
/// <c>SkipLayerNormalization</c> (sum = x + skip + bias; (sum − mean) / √(population variance + ε) · γ + β), on the
/// inline path (few rows), the pool path (rows × d over the inline limit) and odd widths (the vector loops' tails);
/// and its refusals.
/// </summary>
public sealed class SkipLayerNormOpTests
{
    private static InferenceSession Session(int width, int epsilonLength = 1, int gammaLength = -1)
    {
        var g = new GraphBuilder("skip_ln_test");
        g.Input("x", DT.Float, "batch", "seq", width);
        g.Input("skip", DT.Float, "batch", "seq", width);
        g.Input("gamma", DT.Float, gammaLength < 0 ? width : gammaLength);
        g.Input("beta", DT.Float, width);
        g.Input("bias", DT.Float, width);
        g.Input("epsilon", DT.Float, epsilonLength);
        g.NodeMulti(SkipLayerNormOp.Name, ["x", "skip", "gamma", "beta", "bias", "epsilon"], ["normed", "sum"], SkipLayerNormOp.Domain);
        g.Output("normed", DT.Float, "batch", "seq", width);
        g.Output("sum", DT.Float, "batch", "seq", width);
        var options = OrtRuntime.CreateSessionOptions(new RuntimeOptions()); // registers the operator on the CPU provider
        return new InferenceSession(g.ToBytes(), options);
    }

    private static (float[] Normed, float[] Sum) Run(InferenceSession session, int batch, int seq, int width, float[] x, float[] skip,
        float[] gamma, float[] beta, float[] bias, float[] epsilon)
    {
        using var xv = OrtValue.CreateTensorValueFromMemory(x, [batch, seq, width]);
        using var sv = OrtValue.CreateTensorValueFromMemory(skip, [batch, seq, width]);
        using var gv = OrtValue.CreateTensorValueFromMemory(gamma, [gamma.Length]);
        using var bv = OrtValue.CreateTensorValueFromMemory(beta, [beta.Length]);
        using var biv = OrtValue.CreateTensorValueFromMemory(bias, [bias.Length]);
        using var ev = OrtValue.CreateTensorValueFromMemory(epsilon, [epsilon.Length]);
        using var run = new RunOptions();
        using var outputs = session.Run(run, ["x", "skip", "gamma", "beta", "bias", "epsilon"], [xv, sv, gv, bv, biv, ev], ["normed", "sum"]);
        return (outputs[0].GetTensorDataAsSpan<float>().ToArray(), outputs[1].GetTensorDataAsSpan<float>().ToArray());
    }

    [Theory]
    [InlineData(1, 1, 768)]   // one decode row
    [InlineData(32, 1, 768)]  // a decode batch, inline
    [InlineData(1, 128, 768)] // a packed step over the inline limit: rows on the pool
    [InlineData(3, 5, 37)]    // a width that leaves a tail after the vectors
    public void MatchesFloat64Reference(int batch, int seq, int width)
    {
        var rng = new Random(batch * 1000 + seq * 10 + width);
        float[] R(int n, double scale, double offset = 0) => Enumerable.Range(0, n).Select(_ => (float)(offset + scale * (rng.NextDouble() * 2 - 1))).ToArray();
        var rows = batch * seq;
        // rows with a large common offset: a one-pass variance (E[s²] − E[s]²) in float would lose them
        var x = R(rows * width, 3, 40);
        var skip = R(rows * width, 1);
        float[] gamma = R(width, 1, 1), beta = R(width, 0.5), bias = R(width, 0.5);
        const float eps = 1e-5f;
        using var session = Session(width);
        var (normed, sum) = Run(session, batch, seq, width, x, skip, gamma, beta, bias, [eps]);
        for (var r = 0; r < rows; r++)
        {
            var s = new double[width];
            for (var i = 0; i < width; i++) s[i] = (double)x[r * width + i] + skip[r * width + i] + bias[i];
            var mean = s.Average();
            var variance = s.Sum(v => (v - mean) * (v - mean)) / width;
            var inv = 1 / Math.Sqrt(variance + eps);
            for (var i = 0; i < width; i++)
            {
                var k = r * width + i;
                Assert.True(Math.Abs(sum[k] - s[i]) <= 1e-5 * Math.Max(1, Math.Abs(s[i])), $"row {r} col {i}: sum {sum[k]} vs {s[i]}");
                var expected = (s[i] - mean) * inv * gamma[i] + beta[i];
                Assert.True(Math.Abs(normed[k] - expected) <= 2e-5, $"row {r} col {i}: normed {normed[k]} vs {expected}");
            }
        }
    }

    [Fact]
    public void RefusesMismatchedParameters()
    {
        var x = new float[2 * 8];
        using (var session = Session(8, gammaLength: 7))
        {
            var e = Assert.ThrowsAny<OnnxRuntimeException>(() => Run(session, 1, 2, 8, x, x, new float[7], new float[8], new float[8], [1e-5f]));
            Assert.Contains("gamma, beta and bias must each be [8]", e.Message);
        }
        using (var session = Session(8))
        {
            var e = Assert.ThrowsAny<OnnxRuntimeException>(() => Run(session, 1, 2, 8, x, x, new float[8], new float[8], new float[8], [0f]));
            Assert.Contains("epsilon 0 must be positive", e.Message);
        }
        using (var session = Session(8, epsilonLength: 2))
        {
            var e = Assert.ThrowsAny<OnnxRuntimeException>(() => Run(session, 1, 2, 8, x, x, new float[8], new float[8], new float[8], [1e-5f, 1e-5f]));
            Assert.Contains("epsilon must be float [1]", e.Message);
        }
    }
}
