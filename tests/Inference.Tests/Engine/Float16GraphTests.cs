using Microsoft.ML.OnnxRuntime;
using Onnx;
using Serving.Checkpoints;
using Serving.Inference.Adapters;
using Serving.Inference.Engine;
using Serving.Inference.Graphs;
using Serving.Inference.Tests.Reference;
using Serving.Inference.Runtime;
using Xunit;
using DT = Onnx.TensorProto.Types.DataType;

namespace Serving.Inference.Tests.Engine;

/// <summary>
/// The fp16 blocks the CUDA node needs (issue #17 part 4), checked on the CPU: structurally (same nodes, every float
/// tensor fp16, integer tensors untouched) and numerically where ONNX Runtime's CPU provider has the fp16 kernels,
/// against the fp32 block on the same (fp16-representable) inputs.
/// </summary>
public sealed class Float16GraphTests
{
    private const int MaxContext = 32;

    public static TheoryData<string, int> Variants => new()
    {
        { "gpt2", 0 }, { "gpt2", BlockGraph.AllTokensOneAdapter }, { "gpt2", BlockGraph.BatchedGroups },
        { "llama", 0 }, { "llama", BlockGraph.AllTokensOneAdapter }, { "llama", BlockGraph.BatchedGroups },
    };

    [Theory]
    [MemberData(nameof(Variants))]
    public void Block_Float16_SameNodesEveryFloatTensorHalf_IntegersUntouched(string family, int variant)
    {
        using var ckpt = CheckpointFolder.Open(family == "gpt2" ? Fixtures.TinyGpt2 : Fixtures.TinyLlama);
        var (fp32, fp16) = Build(ckpt, variant, shareWeights: true);
        var a = ModelProto.Parser.ParseFrom(fp32.Model).Graph;
        var b = ModelProto.Parser.ParseFrom(fp16.Model).Graph;

        Assert.Equal(a.Node.Select(n => (n.Domain, n.OpType, string.Join(",", n.Input), string.Join(",", n.Output), n.Attribute.ToString())),
            b.Node.Select(n => (n.Domain, n.OpType, string.Join(",", n.Input), string.Join(",", n.Output), n.Attribute.ToString())));
        Assert.Contains(b.Node, n => n.OpType == "GroupQueryAttention"); // the CUDA attention, which takes fp16/bf16 only

        // Inputs and outputs: the same names and shapes; float → fp16, everything else as it was.
        foreach (var (x, y) in a.Input.Concat(a.Output).Zip(b.Input.Concat(b.Output)))
        {
            Assert.Equal(x.Name, y.Name);
            Assert.Equal(x.Type.TensorType.Shape, y.Type.TensorType.Shape);
            var expected = x.Type.TensorType.ElemType == (int)DT.Float ? (int)DT.Float16 : x.Type.TensorType.ElemType;
            Assert.Equal(expected, y.Type.TensorType.ElemType);
        }
        Assert.Contains(b.Input, i => i.Name == BlockGraph.PastKey && i.Type.TensorType.ElemType == (int)DT.Float16);
        Assert.Contains(b.Input, i => i.Name == BlockGraph.SeqLensK && i.Type.TensorType.ElemType == (int)DT.Int32);
        Assert.DoesNotContain(b.Input.Concat(b.Output), i => i.Type.TensorType.ElemType == (int)DT.Float);

        // Initializers: fp16 holds each fp32 value rounded (placeholders of shared weights included); int64 unchanged.
        Assert.Equal(a.Initializer.Count, b.Initializer.Count);
        foreach (var (x, y) in a.Initializer.Zip(b.Initializer))
        {
            Assert.Equal(x.Name, y.Name);
            Assert.Equal(x.Dims, y.Dims);
            if (x.DataType != (int)DT.Float)
            {
                Assert.Equal(x.DataType, y.DataType);
                Assert.Equal(x.RawData, y.RawData);
                continue;
            }
            Assert.Equal((int)DT.Float16, y.DataType);
            var floats = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(x.RawData.Span);
            var halves = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(y.RawData.Span);
            Assert.Equal(floats.Length, halves.Length);
            for (var i = 0; i < floats.Length; i++) Assert.Equal(BitConverter.HalfToUInt16Bits(IndependentHalf(floats[i])), halves[i]);
        }

        // Shared weights (supplied per session with AddInitializer) come as Half arrays of the same shape.
        Assert.NotEmpty(fp16.Shared);
        foreach (var (x, y) in fp32.Shared.Zip(fp16.Shared))
        {
            Assert.Equal((x.Name, x.Dims), (y.Name, y.Dims));
            var f = Assert.IsType<float[]>(x.Values);
            var h = Assert.IsType<Half[]>(y.Values);
            Assert.Equal(f.Select(IndependentHalf), h);
        }
    }

    [Theory]
    [InlineData("gpt2", 0)]
    [InlineData("gpt2", BlockGraph.AllTokensOneAdapter)]
    [InlineData("llama", 0)]
    [InlineData("llama", BlockGraph.AllTokensOneAdapter)]
    public void Block_Float16_OnTheCpu_MatchesTheFp32Block(string family, int variant)
    {
        // ONNX Runtime's CPU provider runs the fp16 graph (where a CPU kernel has no fp16 form its graph transformer
        // casts around it), so the conversion's numbers are checked here; the kernels CUDA picks are checked on a GPU.
        using var ckpt = CheckpointFolder.Open(family == "gpt2" ? Fixtures.TinyGpt2 : Fixtures.TinyLlama);
        var c = ckpt.Config;
        var (fp32, fp16) = Build(ckpt, variant, shareWeights: false);
        const int T = 5;
        var random = new Random(3);
        // Inputs exactly representable in fp16, so both graphs start from the same values.
        var hidden = new float[T * c.HiddenSize];
        for (var i = 0; i < hidden.Length; i++) hidden[i] = (float)(Half)(random.NextDouble() * 2 - 1);
        var kvShape = new long[] { 1, c.NumKvHeads, MaxContext, c.HeadDim };
        var kvLength = c.NumKvHeads * MaxContext * c.HeadDim;
        using var options = OrtRuntime.CreateSessionOptions(new RuntimeOptions()); // the process-wide environment the engine uses
        using var s32 = new InferenceSession(fp32.Model, options);
        using var s16 = new InferenceSession(fp16.Model, options);
        // One rank-4 adapter on every projection (the one-adapter variant), values fp16-representable.
        var lora = new Dictionary<string, (float[] Values, long[] Shape)>();
        if (variant == BlockGraph.AllTokensOneAdapter)
        {
            for (var p = 0; p < Adapters.AdapterFactors.ProjectionCount; p++)
            {
                var projection = (Adapters.AdaptedProjection)p;
                var (inDim, outDim) = Adapters.AdapterFactors.Shape(c, projection);
                float[] Factor(int n) => Enumerable.Range(0, n).Select(_ => (float)(Half)((random.NextDouble() * 2 - 1) * 0.2)).ToArray();
                lora[BlockGraph.LoraInput(projection, a: true)] = (Factor(4 * inDim), [4, inDim]);
                lora[BlockGraph.LoraInput(projection, a: false)] = (Factor(4 * outDim), [4, outDim]);
            }
        }
        var expected = Run(s32, c, hidden, T, kvLength, kvShape, lora, half: false);
        var actual = Run(s16, c, hidden, T, kvLength, kvShape, lora, half: true);
        double worst = 0, scale = expected.Max(Math.Abs);
        for (var i = 0; i < expected.Length; i++) worst = Math.Max(worst, Math.Abs(expected[i] - actual[i]));
        Assert.True(worst <= 1e-2 * scale, $"fp16 block differs from fp32 by {worst} (largest |output| {scale})");
        Assert.True(worst > 0, "the fp16 graph gave the fp32 graph's exact outputs: it did not compute in fp16");
    }

    private static float[] Run(InferenceSession session, ModelConfig c, float[] hidden, int tokens, int kvLength, long[] kvShape,
        Dictionary<string, (float[] Values, long[] Shape)> lora, bool half)
    {
        var inputs = new Dictionary<string, OrtValue>();
        try
        {
            OrtValue Float(float[] values, long[] shape) => half
                ? OrtValue.CreateTensorValueFromMemory(values.Select(v => new Float16(BitConverter.HalfToUInt16Bits((Half)v))).ToArray(), shape)
                : OrtValue.CreateTensorValueFromMemory(values, shape);
            inputs[BlockGraph.Hidden] = Float(hidden, [1, tokens, c.HiddenSize]);
            inputs[BlockGraph.PastKey] = Float(new float[kvLength], kvShape);
            inputs[BlockGraph.PastValue] = Float(new float[kvLength], kvShape);
            inputs[BlockGraph.SeqLensK] = OrtValue.CreateTensorValueFromMemory(new[] { tokens - 1 }, [1]);
            inputs[BlockGraph.TotalSeqLen] = OrtValue.CreateTensorValueFromMemory(new[] { tokens }, []);
            foreach (var (name, (values, shape)) in lora) inputs[name] = Float(values, shape);
            if (c.Architecture == ModelArchitecture.Llama)
            {
                inputs[BlockGraph.PositionIds] = OrtValue.CreateTensorValueFromMemory(Enumerable.Range(0, tokens).Select(i => (long)i).ToArray(), [1, tokens]);
            }
            using var runOptions = new RunOptions();
            using var outputs = session.Run(runOptions, inputs.Keys.ToArray(), inputs.Values.ToArray(), [BlockGraph.HiddenOut]);
            return half
                ? outputs[0].GetTensorDataAsSpan<Float16>().ToArray().Select(h => (float)BitConverter.UInt16BitsToHalf(h.value)).ToArray()
                : outputs[0].GetTensorDataAsSpan<float>().ToArray();
        }
        finally
        {
            foreach (var v in inputs.Values) v.Dispose();
        }
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void Engine_Float16Precision_BaseAndAdapterRowsInOneBatch_MatchFloat64Reference(string family)
    {
        // The whole engine on fp16 blocks (fp16 weights, activations and K/V cache; fp32 embedding, head and slots), run
        // by the CPU provider: a base row and an adapter row decode together (the batched-groups variant) and each
        // follows the independent float64 forward within fp16's error.
        var dir = family == "gpt2" ? Fixtures.TinyGpt2 : Fixtures.TinyLlama;
        var options = new RuntimeOptions { MaxBatch = 2, MaxContext = MaxContext, AdapterSlots = 2, Precision = ComputePrecision.Float16 };
        Assert.False(options.UsesSegmentedAdapters); // Auto picks the stock-operator kernel for fp16
        using var model = DecoderModel.Load(dir, options);
        using var dec = new BatchDecoder(model);
        var c = model.Config;
        var modules = AdapterTests.RandomModules(c, seed: 7, rankBase: 2);
        dec.Adapters!.Write(1, AdapterFactors.FromLora(c, modules));
        ReferenceModel[] references = [new ReferenceModel(dir), new ReferenceModel(dir, AdapterTests.MergedDeltas(c, (modules, 1.0)))];
        List<int>[] tokens = [[3, 141, 59, 26, 5], [7, 2, 99, 14]];
        var seqs = new Sequence[2];
        double worstRelative = 0;
        void Check(ReadOnlySpan<float> logits, int row, string what)
        {
            var expected = references[row].Forward(tokens[row]).Logits[^1];
            var scale = expected.Max(Math.Abs);
            double worst = 0;
            for (var i = 0; i < expected.Length; i++) worst = Math.Max(worst, Math.Abs(expected[i] - logits[i]));
            Assert.True(worst <= 1e-2 * scale, $"{family} row {row} {what}: logits differ from the float64 reference by {worst:E3} (largest |logit| {scale:F3})");
            worstRelative = Math.Max(worstRelative, worst / scale);
        }
        for (var row = 0; row < 2; row++)
        {
            seqs[row] = dec.TryAllocate()!;
            if (row == 1) dec.SetAdapter(seqs[row], 1);
            var logits = dec.Prefill(seqs[row], tokens[row].ToArray());
            Check(logits, row, "prefill");
            seqs[row].PendingToken = ReferenceLogitsTests.ArgMax(logits);
        }
        for (var step = 0; step < 6; step++)
        {
            for (var row = 0; row < 2; row++) tokens[row].Add(seqs[row].PendingToken);
            var logits = dec.Decode();
            for (var row = 0; row < 2; row++)
            {
                var own = logits.Slice(row * c.VocabSize, c.VocabSize);
                Check(own, row, $"decode step {step}");
                seqs[row].PendingToken = ReferenceLogitsTests.ArgMax(own);
            }
        }
        Assert.True(worstRelative > 1e-6, "the fp16 engine gave fp32's logits: the blocks did not run in fp16");
        Assert.Equal(2L * c.VocabSize * c.HiddenSize, model.HeadWeightBytes); // the head holds an fp16 copy of the tied embedding
        Assert.Equal(2L * c.NumLayers * 2 * c.NumKvHeads * MaxContext * c.HeadDim * 2, dec.KvCacheForTests.Bytes); // 2 bytes per K/V value
    }

    [Fact]
    public void Precision_Float16_RefusesTheFp32OnlyParts()
    {
        foreach (var options in new[]
        {
            new RuntimeOptions { Precision = ComputePrecision.Float16, PackedSteps = true },
            new RuntimeOptions { Precision = ComputePrecision.Float16, AdapterKernel = AdapterKernelKind.Segmented },
            new RuntimeOptions { Precision = ComputePrecision.Float16, FusedDecode = true },
            new RuntimeOptions { Precision = ComputePrecision.Float16, Weights = WeightFormat.Int4 },
        })
        {
            var e = Assert.Throws<ArgumentException>(options.Validate);
            Assert.Contains("fp16", e.Message);
        }
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void Head_Float16_HalfWeightsFp32Boundaries_MatchesTheFp32HeadOnTheCpu(string family)
    {
        // The head the fp16 engine builds (final norm + LM head): every float weight fp16, rows in and logits out fp32
        // through a Cast at each end, the nodes otherwise the same; on the CPU its logits follow the fp32 head's.
        using var ckpt = CheckpointFolder.Open(family == "gpt2" ? Fixtures.TinyGpt2 : Fixtures.TinyLlama);
        var c = ckpt.Config;
        var random = new Random(11);
        float[] Values(long n, double scale) => Enumerable.Range(0, (int)n).Select(_ => (float)((random.NextDouble() * 2 - 1) * scale)).ToArray();
        var fp32 = HeadGraph.Build(c, Values(c.HiddenSize, 1.5), family == "gpt2" ? Values(c.HiddenSize, 0.2) : null, Values((long)c.VocabSize * c.HiddenSize, 0.1));
        var fp16 = Float16Graph.Convert(fp32, Float16Graph.HeadBoundary);
        var a = ModelProto.Parser.ParseFrom(fp32).Graph;
        var b = ModelProto.Parser.ParseFrom(fp16).Graph;

        Assert.Equal(a.Input.Concat(a.Output).Select(i => (i.Name, i.Type.TensorType.ElemType)), b.Input.Concat(b.Output).Select(i => (i.Name, i.Type.TensorType.ElemType)));
        Assert.All(b.Input.Concat(b.Output), i => Assert.Equal((int)DT.Float, i.Type.TensorType.ElemType));
        Assert.Equal(["Cast", .. a.Node.Select(n => n.OpType), "Cast"], b.Node.Select(n => n.OpType));
        Assert.Equal(a.Initializer.Count, b.Initializer.Count);
        foreach (var (x, y) in a.Initializer.Zip(b.Initializer))
        {
            Assert.Equal((x.Name, x.Dims), (y.Name, y.Dims));
            Assert.Equal((int)DT.Float16, y.DataType);
            var floats = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(x.RawData.Span);
            var halves = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(y.RawData.Span);
            Assert.Equal(floats.Length, halves.Length);
            for (var i = 0; i < floats.Length; i++) Assert.Equal(BitConverter.HalfToUInt16Bits(IndependentHalf(floats[i])), halves[i]);
        }

        const int Rows = 3;
        var hidden = Values((long)Rows * c.HiddenSize, 2.0);
        using var options = OrtRuntime.CreateSessionOptions(new RuntimeOptions());
        float[] Logits(byte[] graph)
        {
            using var session = new InferenceSession(graph, options);
            using var input = OrtValue.CreateTensorValueFromMemory(hidden, [Rows, c.HiddenSize]);
            using var runOptions = new RunOptions();
            using var outputs = session.Run(runOptions, [HeadGraph.Hidden], [input], [HeadGraph.Logits]);
            return outputs[0].GetTensorDataAsSpan<float>().ToArray();
        }
        var expected = Logits(fp32);
        var actual = Logits(fp16);
        Assert.Equal(Rows * c.VocabSize, actual.Length);
        double worst = 0, scale = expected.Max(Math.Abs);
        for (var i = 0; i < expected.Length; i++) worst = Math.Max(worst, Math.Abs(expected[i] - actual[i]));
        Assert.True(worst <= 1e-2 * scale, $"fp16 head differs from fp32 by {worst} (largest |logit| {scale})");
        Assert.True(worst > 0, "the fp16 head gave the fp32 head's exact logits: it did not compute in fp16");
    }

    [Fact]
    public void Convert_RefusesTheCpuCustomOperators()
    {
        using var ckpt = CheckpointFolder.Open(Fixtures.TinyGpt2);
        var c = ckpt.Config;
        var segmented = BlockGraph.Build(c, LayerWeights.Read(ckpt, 0), 0, MaxContext, null, BlockGraph.Segmented);
        var e = Assert.Throws<NotSupportedException>(() => Float16Graph.Convert(segmented));
        Assert.Contains("fp32 only", e.Message);
        var packed = BlockGraph.Build(c, LayerWeights.Read(ckpt, 0), 0, MaxContext, null, 0, shareWeights: false, packed: true).Model;
        Assert.Throws<NotSupportedException>(() => Float16Graph.Convert(packed));
    }

    /// <summary>
    /// fp32 → fp16 restated from IEEE 754 binary16: the representable magnitudes are monotone in their bit patterns, so
    /// bisection finds the two around |v|; the nearer wins, a tie goes to the even pattern; from 65520 (half an ulp
    /// above the largest finite, 65504) up it is ∞.
    /// </summary>
    private static Half IndependentHalf(float value)
    {
        if (float.IsNaN(value)) return Half.NaN;
        var magnitude = Math.Abs((double)value);
        int lo = 0, hi = 0x7C00; // +0 .. +∞
        while (hi - lo > 1)
        {
            var mid = (lo + hi) / 2;
            if (HalfValue((ushort)mid) <= magnitude) lo = mid; else hi = mid;
        }
        double below = magnitude - HalfValue((ushort)lo), above = HalfValue((ushort)hi) - magnitude;
        var bits = magnitude >= 65520 ? 0x7C00 : below < above || (below == above && (lo & 1) == 0) ? lo : hi;
        if (float.IsNegative(value)) bits |= 0x8000;
        return BitConverter.UInt16BitsToHalf((ushort)bits);
    }

    private static double HalfValue(ushort bits)
    {
        int exponent = (bits >> 10) & 0x1F, mantissa = bits & 0x3FF;
        if (exponent == 0x1F) return double.PositiveInfinity;
        return exponent == 0 ? mantissa * Math.Pow(2, -24) : (1 + mantissa / 1024.0) * Math.Pow(2, exponent - 15);
    }

    internal static ((byte[] Model, List<(string Name, Array Values, long[] Dims)> Shared) Fp32, (byte[] Model, List<(string Name, Array Values, long[] Dims)> Shared) Fp16)
        Build(CheckpointFolder ckpt, int variant, bool shareWeights)
    {
        var c = ckpt.Config;
        var rotary = c.Architecture == ModelArchitecture.Llama ? new RotaryTables(c, MaxContext) : null;
        var fp32 = BlockGraph.Build(c, LayerWeights.Read(ckpt, 1), 1, MaxContext, rotary, variant, shareWeights);
        return (fp32, Float16Graph.Convert(fp32));
    }
}
