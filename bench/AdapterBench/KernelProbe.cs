using Microsoft.ML.OnnxRuntime;
using Serving.Inference.Adapters;
using Serving.Inference.Graphs;
using Serving.Inference.Runtime;
using DT = Onnx.TensorProto.Types.DataType;

/// <summary>
/// AdapterBench <c>--only k</c>: <c>serving.lora::SegmentedLora</c> alone in a one-node session at one projection's
/// shape, every token on one adapter, the fused units and the two phases alternating call by call: the operator's own time
/// (its phase timer, from entry to return, not ONNX Runtime's call overhead), output in place, median per call.
/// </summary>
internal static class KernelProbe
{
    public static (double TwoPhaseMs, double FusedMs) Time(int tokens, int inDim, int outDim, int rank, int calls)
    {
        const int slots = 4;
        var g = new GraphBuilder("segmented_lora_probe");
        g.Input("y", DT.Float, tokens, 1, outDim);
        g.Input("x", DT.Float, tokens, 1, inDim);
        g.Input("a", DT.Float, slots, rank, inDim);
        g.Input("b", DT.Float, slots, rank, outDim);
        g.Input("ranks", DT.Int64, slots);
        g.Input("plan", DT.Int64, "plan_length");
        g.Node(SegmentedLoraOp.Name, ["y", "x", "a", "b", "ranks", "plan"], "z", SegmentedLoraOp.Domain);
        g.Output("z", DT.Float, tokens, 1, outDim);
        using var options = OrtRuntime.CreateSessionOptions(new RuntimeOptions());
        SegmentedLoraOp.Register(options);
        using var session = new InferenceSession(g.ToBytes(), options);
        var rng = new Random(3);
        float[] R(long n) => Enumerable.Range(0, (int)n).Select(_ => (float)(rng.NextDouble() * 2 - 1) * 0.1f).ToArray();
        var plan = new long[4 + tokens];
        plan[0] = 1;
        plan[1] = 2;
        plan[2] = 0;
        plan[3] = tokens;
        for (var t = 0; t < tokens; t++) plan[4 + t] = t;
        using var y = OrtValue.CreateTensorValueFromMemory(R(tokens * outDim), [tokens, 1, outDim]);
        using var x = OrtValue.CreateTensorValueFromMemory(R(tokens * inDim), [tokens, 1, inDim]);
        using var a = OrtValue.CreateTensorValueFromMemory(R(slots * rank * inDim), [slots, rank, inDim]);
        using var b = OrtValue.CreateTensorValueFromMemory(R(slots * rank * outDim), [slots, rank, outDim]);
        using var ranks = OrtValue.CreateTensorValueFromMemory(Enumerable.Repeat((long)rank, slots).ToArray(), [slots]);
        using var pv = OrtValue.CreateTensorValueFromMemory(plan, [plan.Length]);
        using var run = new RunOptions();
        string[] inputs = ["y", "x", "a", "b", "ranks", "plan"], outputs = ["z"];
        // The output bound to y's own buffer: the operator then adds in place, as ONNX Runtime lets it in the engine's
        // graphs (y accumulates the updates call after call; the values stay small).
        OrtValue[] values = [y, x, a, b, ranks, pv], outValues = [y];
        var samples = new[] { new List<double>(calls), new List<double>(calls) };
        var (runs0, inPlace0) = SegmentedLoraOp.Counts;
        for (var i = -20; i < calls; i++)
        {
            for (var v = 0; v < 2; v++)
            {
                SegmentedLoraProfile.TwoPhase = v == 0;
                SegmentedLoraProfile.GeneralPathOnly = true; // batch 1 and 2 through the general path as well
                SegmentedLoraProfile.Enabled = true;
                var before = SegmentedLoraProfile.Snapshot();
                session.Run(run, inputs, values, outputs, outValues);
                var d = SegmentedLoraProfile.Snapshot() - before;
                SegmentedLoraProfile.Enabled = false;
                if (i >= 0) samples[v].Add(d.FixedMs + d.ShrinkMs + d.ExpandMs);
            }
        }
        SegmentedLoraProfile.TwoPhase = false;
        SegmentedLoraProfile.GeneralPathOnly = false;
        var (runs1, inPlace1) = SegmentedLoraOp.Counts;
        if (inPlace1 - inPlace0 != runs1 - runs0) throw new InvalidOperationException("the probe's calls did not all run in place; its times would include a copy of y");
        return (Median(samples[0]), Median(samples[1]));
    }

    private static double Median(List<double> v)
    {
        v.Sort();
        return v[v.Count / 2];
    }
}
