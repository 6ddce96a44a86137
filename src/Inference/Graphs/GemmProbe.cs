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
}
