using Microsoft.ML.OnnxRuntime;
using Serving.Inference.Adapters;
using Serving.Inference.Graphs;
using Serving.Inference.Runtime;
using Xunit;
using DT = Onnx.TensorProto.Types.DataType;

namespace Serving.Inference.Tests.Engine;

/// <summary>
/// The C# custom operator alone, in a one-node ONNX Runtime session, against a float64 loop over the same inputs:
/// segments of different ranks and sizes, tokens left out, dimensions that are not multiples of the vector width, and
/// plans that point outside their tensors.
/// </summary>
public sealed class SegmentedLoraOpTests
{
    private static InferenceSession Session()
    {
        var g = new GraphBuilder("segmented_lora");
        g.Input("y", DT.Float, "batch", "seq", "out");
        g.Input("x", DT.Float, "batch", "seq", "in");
        g.Input("a", DT.Float, "slots", "rank", "in");
        g.Input("b", DT.Float, "slots", "rank", "out");
        g.Input("ranks", DT.Int64, "slots");
        g.Input("plan", DT.Int64, "plan_length");
        g.Node(SegmentedLoraOp.Name, ["y", "x", "a", "b", "ranks", "plan"], "z", SegmentedLoraOp.Domain);
        g.Output("z", DT.Float, "batch", "seq", "out");
        var options = OrtRuntime.CreateSessionOptions(new RuntimeOptions());
        SegmentedLoraOp.Register(options);
        return new InferenceSession(g.ToBytes(), options);
    }

    private sealed record Case(int Batch, int Seq, int In, int Out, int Slots, int Capacity, long[] Ranks, long[] Plan, int Seed);

    private static (float[] Y, float[] X, float[] A, float[] B) Inputs(Case k)
    {
        var rng = new Random(k.Seed);
        float[] R(long n) => Enumerable.Range(0, (int)n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var tokens = k.Batch * k.Seq;
        return (R(tokens * k.Out), R(tokens * k.In), R((long)k.Slots * k.Capacity * k.In), R((long)k.Slots * k.Capacity * k.Out));
    }

    private static float[] Run(InferenceSession session, Case k, float[] y, float[] x, float[] a, float[] b)
    {
        using var yv = OrtValue.CreateTensorValueFromMemory(y, [k.Batch, k.Seq, k.Out]);
        using var xv = OrtValue.CreateTensorValueFromMemory(x, [k.Batch, k.Seq, k.In]);
        using var av = OrtValue.CreateTensorValueFromMemory(a, [k.Slots, k.Capacity, k.In]);
        using var bv = OrtValue.CreateTensorValueFromMemory(b, [k.Slots, k.Capacity, k.Out]);
        using var rv = OrtValue.CreateTensorValueFromMemory(k.Ranks, [k.Slots]);
        using var pv = OrtValue.CreateTensorValueFromMemory(k.Plan, [k.Plan.Length]);
        using var run = new RunOptions();
        using var outputs = session.Run(run, ["y", "x", "a", "b", "ranks", "plan"], [yv, xv, av, bv, rv, pv], ["z"]);
        return outputs[0].GetTensorDataAsSpan<float>().ToArray();
    }

    /// <summary>z = y, plus Σ_j (x·a[pos, j]) · b[pos, j] for each planned token, in float64, written independently of the operator.</summary>
    private static double[] Reference(Case k, float[] y, float[] x, float[] a, float[] b)
    {
        var z = y.Select(v => (double)v).ToArray();
        var groups = (int)k.Plan[0];
        var order = 1 + 3 * groups;
        for (var g = 0; g < groups; g++)
        {
            long pos = k.Plan[1 + 3 * g], start = k.Plan[2 + 3 * g], count = k.Plan[3 + 3 * g];
            for (var e = start; e < start + count; e++)
            {
                var t = k.Plan[order + e];
                for (var j = 0; j < k.Ranks[pos]; j++)
                {
                    double h = 0;
                    for (var i = 0; i < k.In; i++) h += (double)x[t * k.In + i] * a[(pos * k.Capacity + j) * k.In + i];
                    for (var o = 0; o < k.Out; o++) z[t * k.Out + o] += h * b[(pos * k.Capacity + j) * k.Out + o];
                }
            }
        }
        return z;
    }

    public static TheoryData<string> Shapes => ["decode-mixed", "prefill-one", "odd-dims", "empty-plan", "one-token", "two-adapters-two-tokens", "two-adapters-split", "wide-pool"];

    private static Case Build(string shape) => shape switch
    {
        // 12 rows over 4 slots: segments of 5, 1, 4 rows (ranks 16, 3, 8), rows 3 and 9 without an adapter.
        "decode-mixed" => new Case(12, 1, 96, 200, 4, 16, [16, 3, 0, 8],
            [3, 0, 0, 5, 1, 5, 1, 3, 6, 4, /* order */ 0, 2, 4, 6, 8, 10, 1, 5, 7, 11], Seed: 1),
        // One segment over all 7 tokens of a prefill (batch 1, seq 7), rank 6 of capacity 8 in slot 2.
        "prefill-one" => new Case(1, 7, 64, 72, 3, 8, [2, 0, 6], [1, 2, 0, 7, 0, 1, 2, 3, 4, 5, 6], Seed: 2),
        // Dimensions off the vector width, rank 5 (a partial unit of 4 rows), tokens in a shuffled order.
        "odd-dims" => new Case(3, 2, 37, 83, 2, 5, [5, 1], [2, 0, 0, 4, 1, 4, 2, 5, 0, 3, 1, 2, 4], Seed: 3),
        // Batch-1 decode at GPT-2's c_attn shape (issue #19's small-step pass): one token on slot 1 of rank 16.
        "one-token" => new Case(1, 1, 768, 2304, 2, 16, [4, 16], [1, 1, 0, 1, 0], Seed: 7),
        // Small-step pass with two segments of different ranks (13 and 3, capacity 16) and row 1 without an adapter,
        // dimensions off the vector width.
        "two-adapters-two-tokens" => new Case(3, 1, 101, 203, 3, 16, [13, 0, 3], [2, 2, 0, 1, 0, 1, 1, 2, 0], Seed: 8),
        // As above with enough work for the small pass to split ranks over the pool (rank 13 → 6 + 7 rows, rank 3 →
        // 1 + 2 rows with two threads), tokens in plan order 2, 0.
        "two-adapters-split" => new Case(3, 1, 333, 777, 3, 16, [13, 0, 3], [2, 2, 0, 1, 0, 1, 1, 2, 0], Seed: 9),
        // Four-token units with their tails (AVX-512 where the machine has it): segments of 5 and 4 tokens at ranks 16
        // and 13 (whole blocks of four A rows plus one), in = 1030 and out = 1000 off the 16- and 32-wide loops, and
        // enough work (268k multiply-adds) for the units to run on the pool.
        "wide-pool" => new Case(9, 1, 1030, 1000, 2, 16, [16, 13], [2, 0, 0, 5, 1, 5, 4, 0, 2, 4, 6, 7, 1, 3, 5, 8], Seed: 10),
        // Base rows only: the output must equal y.
        _ => new Case(2, 1, 16, 24, 2, 4, [4, 4], [0], Seed: 4),
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void MatchesAnIndependentFloat64Loop(string shape) => AssertMatchesReference(shape);

    [Theory]
    [MemberData(nameof(Shapes))]
    public void GeneralPathOnly_AnyShape_MatchesAnIndependentFloat64Loop(string shape)
    {
        // The general path (fused units) on the shapes the small-step pass would take (both must agree with the
        // reference). The switch is process-wide; other tests that run meanwhile take either path, and both are exact
        // to 1e-4.
        SegmentedLoraProfile.GeneralPathOnly = true;
        try
        {
            AssertMatchesReference(shape);
        }
        finally
        {
            SegmentedLoraProfile.GeneralPathOnly = false;
        }
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void TwoPhase_AnyShape_MatchesAnIndependentFloat64Loop(string shape)
    {
        // The general path as two phases (every shrink unit, then every expand unit) instead of the fused units.
        SegmentedLoraProfile.GeneralPathOnly = true;
        SegmentedLoraProfile.TwoPhase = true;
        try
        {
            AssertMatchesReference(shape);
        }
        finally
        {
            SegmentedLoraProfile.TwoPhase = false;
            SegmentedLoraProfile.GeneralPathOnly = false;
        }
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void SmallStepInline_AnyShape_MatchesAnIndependentFloat64Loop(string shape)
    {
        // The small-step pass on the calling thread only (the default splits ranks over the pool when the work allows).
        SegmentedLoraProfile.SmallStepInline = true;
        try
        {
            AssertMatchesReference(shape);
        }
        finally
        {
            SegmentedLoraProfile.SmallStepInline = false;
        }
    }

    private static void AssertMatchesReference(string shape)
    {
        var k = Build(shape);
        using var session = Session();
        var (y, x, a, b) = Inputs(k);
        var z = Run(session, k, y, x, a, b);
        var expected = Reference(k, y, x, a, b);
        Assert.Equal(expected.Length, z.Length);
        double worst = 0;
        for (var i = 0; i < z.Length; i++) worst = Math.Max(worst, Math.Abs(z[i] - expected[i]));
        Assert.True(worst <= 1e-4, $"max |z − reference| = {worst}");
        // Rows a plan leaves out come back bit-exact.
        var planned = k.Plan.Skip(1 + 3 * (int)k.Plan[0]).ToHashSet();
        for (var t = 0; t < k.Batch * k.Seq; t++)
        {
            if (planned.Contains(t)) continue;
            Assert.Equal(y.AsSpan(t * k.Out, k.Out).ToArray(), z.AsSpan(t * k.Out, k.Out).ToArray());
        }
    }

    [Fact]
    public void Profile_Enabled_CountsCallsTokensAndAdapterBytes()
    {
        // The bench's per-phase mode reads these counters; one call, two planned tokens over ranks 13 and 3.
        var k = Build("two-adapters-two-tokens");
        using var session = Session();
        var (y, x, a, b) = Inputs(k);
        SegmentedLoraProfile.Enabled = true;
        SegmentedLoraPhases before, after;
        try
        {
            before = SegmentedLoraProfile.Snapshot();
            Run(session, k, y, x, a, b);
            after = SegmentedLoraProfile.Snapshot();
        }
        finally
        {
            SegmentedLoraProfile.Enabled = false;
        }
        var d = after - before;
        // Other tests may run the operator meanwhile with the profile on: at least this call's counts.
        Assert.True(d.Calls >= 1);
        Assert.True(d.Tokens >= 2);
        Assert.True(d.AdapterBytes >= (13 + 3) * (k.In + k.Out) * sizeof(float));
    }

    [Fact]
    public void RowsBeyondASlotsRankAreNotRead()
    {
        // Rank 2 of capacity 4: garbage in rows 2..3 of the block must not reach the output.
        var k = new Case(2, 1, 16, 24, 1, 4, [2], [1, 0, 0, 2, 0, 1], Seed: 5);
        using var session = Session();
        var (y, x, a, b) = Inputs(k);
        var clean = Run(session, k, y, x, a, b);
        for (var i = 2 * k.In; i < 4 * k.In; i++) a[i] = float.NaN;
        for (var i = 2 * k.Out; i < 4 * k.Out; i++) b[i] = float.NaN;
        Assert.Equal(clean, Run(session, k, y, x, a, b));
    }

    public static TheoryData<long[], long[], string> BadPlans => new()
    {
        { [2, 2], [1, 5, 0, 1, 0], "slot position 5" },
        { [2, 2], [1, 0, 0, 3, 0, 1], "entries [0, 3)" },
        { [2, 2], [1, 0, 0, 1, 9], "token 9" },
        { [2, 2], [4, 0, 0, 1], "cannot hold 4 segments" },
        { [2, 7], [1, 1, 0, 1, 0], "rank 7" },
        { [2, 2], [2, 0, 0, 1, 1, 1, 1, 0, 0], "token 0 appears in more than one" },
    };

    [Theory]
    [MemberData(nameof(BadPlans))]
    public void APlanOutsideItsTensorsFailsTheRunWithAClearMessage(long[] ranks, long[] plan, string expected)
    {
        var k = new Case(2, 1, 8, 8, 2, 4, ranks, plan, Seed: 6);
        using var session = Session();
        var (y, x, a, b) = Inputs(k);
        var e = Assert.Throws<OnnxRuntimeException>(() => Run(session, k, y, x, a, b));
        Assert.Contains(SegmentedLoraOp.Name, e.Message);
        Assert.Contains(expected, e.Message);
        // The session still works afterwards.
        var ok = k with { Ranks = [2, 2], Plan = [1, 0, 0, 2, 0, 1] };
        Assert.Equal(16, Run(session, ok, y, x, a, b).Length);
    }
}
