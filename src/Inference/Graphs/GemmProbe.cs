using DT = Onnx.TensorProto.Types.DataType;

namespace Serving.Inference.Graphs;

/// <summary>A one-MatMul graph (x [m, k] × W [k, n] initializer) that benchmarks use to measure the machine's GEMM throughput.</summary>
public static class GemmProbe
{
    public static byte[] Build(float[] weight, int k, int n)
    {
        var g = new GraphBuilder("gemm_probe");
        g.Input("x", DT.Float, "m", k);
        g.Node("MatMul", ["x", g.Weight("w", weight, k, n)], "y");
        g.Output("y", DT.Float, "m", n);
        return g.ToBytes();
    }

    /// <summary>
    /// Independent MatMuls x_i [m, k_i] × W_i [k_i, n_i] in one graph (inputs <c>x{i}</c>, outputs <c>y{i}</c>): one
    /// transformer layer's projections at decode shapes, to measure what ONNX Runtime's MatMul alone achieves there.
    /// </summary>
    public static byte[] BuildLayer(IReadOnlyList<(float[] Weight, int K, int N)> matmuls)
    {
        var g = new GraphBuilder("matmul_layer_probe");
        for (var i = 0; i < matmuls.Count; i++)
        {
            var (w, k, n) = matmuls[i];
            g.Input($"x{i}", DT.Float, "m", k);
            g.Node("MatMul", [$"x{i}", g.Weight($"w{i}", w, k, n)], $"y{i}");
            g.Output($"y{i}", DT.Float, "m", n);
        }
        return g.ToBytes();
    }
}
