using Serving.Checkpoints;
using Serving.Inference.Adapters;
using Serving.Inference.Engine;
using Serving.Inference.Graphs;
using Serving.Inference.Runtime;
using Serving.Inference.Tests.Reference;
using Xunit;

namespace Serving.Inference.Tests.Engine;

/// <summary>
/// Quantised projection weights (<see cref="RuntimeOptions.Weights"/>): the block format against an independent
/// re-statement of <c>MatMulNBits</c>' layout, and the engine's logits against the float64 reference run on the
/// dequantised weights, so the quantisation is the only change.
/// </summary>
public sealed class QuantizedWeightsTests
{
    public static TheoryData<string, WeightFormat, int> Cases => new()
    {
        { "gpt2", WeightFormat.Int8, 32 },
        { "gpt2", WeightFormat.Int4, 32 },
        { "llama", WeightFormat.Int8, 32 },
        { "llama", WeightFormat.Int4, 16 },
        { "llama", WeightFormat.Int4, 64 },
    };

    [Theory]
    [InlineData(WeightFormat.Int8, 48, 20, 32)]
    [InlineData(WeightFormat.Int4, 48, 20, 32)]
    [InlineData(WeightFormat.Int4, 96, 7, 16)]
    [InlineData(WeightFormat.Int4, 33, 5, 16)]
    public void Quantize_IndependentDequantizer_AgreesAndStaysWithinHalfAStep(WeightFormat format, int k, int n, int blockSize)
    {
        var random = new Random(7);
        var w = new float[k * n];
        for (var i = 0; i < w.Length; i++) w[i] = (float)(random.NextDouble() * 2 - 1) * (i % 11 == 0 ? 3 : 1);
        w[5] = 0; // zeros stay exact in both formats

        var q = WeightQuantizer.Quantize(w, k, n, format, blockSize);
        var independent = IndependentDequantize(q.Data, q.Scales, q.ZeroPoints, k, n, q.Bits, blockSize);
        Assert.Equal(independent, WeightQuantizer.Dequantize(q));
        Assert.Equal(0f, independent[5]);
        var blocks = (k + blockSize - 1) / blockSize;
        for (var row = 0; row < k; row++)
        {
            for (var col = 0; col < n; col++)
            {
                var step = q.Scales[col * blocks + row / blockSize];
                var error = Math.Abs(independent[row * n + col] - w[row * n + col]);
                Assert.True(error <= step / 2 * 1.0001 + 1e-7, $"[{row}, {col}]: error {error} > half a step {step / 2}");
            }
        }

        // The transposed input ([N, K], an LM head's layout) gives the same form.
        var transposed = new float[w.Length];
        for (var row = 0; row < k; row++) for (var col = 0; col < n; col++) transposed[col * k + row] = w[row * n + col];
        var t = WeightQuantizer.Quantize(transposed, k, n, format, blockSize, transposed: true);
        Assert.Equal(q.Data, t.Data);
        Assert.Equal(q.Scales, t.Scales);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Prefill_QuantizedProjections_MatchFloat64ReferenceOnTheDequantizedWeights(string name, WeightFormat format, int blockSize) =>
        PrefillMatchesDequantizedReference(name, format, blockSize, accuracyLevel: 0, tolerance: 1e-4);

    /// <summary>
    /// Accuracy level 4 also rounds each block of activations to int8 (MLAS' integer kernels): one more rounding, so
    /// the bound is looser; measured worst case on these fixtures: see docs/benchmarks.md, "Quantised weights".
    /// </summary>
    [Theory]
    [MemberData(nameof(Cases))]
    public void Prefill_Int8Activations_StayCloseToTheDequantizedReference(string name, WeightFormat format, int blockSize)
    {
        var dir = name == "gpt2" ? Fixtures.TinyGpt2 : Fixtures.TinyLlama;
        using var model = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = 1, MaxContext = 64, Weights = format, WeightBlockSize = blockSize, WeightAccuracyLevel = 4 });
        using var dec = new BatchDecoder(model);
        int[] prompt = [5, 17, 42, 99, 3, 250, 7, 8, 120, 64, 1];
        var v = model.Config.VocabSize;
        var logits = new float[prompt.Length * v];
        dec.Prefill(dec.TryAllocate()!, prompt, null, logits);
        var (expected, _) = new ReferenceModel(dir, DequantizationDeltas(dir, format, blockSize)).Forward(prompt);
        for (var t = 0; t < prompt.Length; t++)
        {
            double error = 0, norm = 0;
            for (var i = 0; i < v; i++)
            {
                error += Math.Pow(logits[t * v + i] - expected[t][i], 2);
                norm += expected[t][i] * expected[t][i];
            }
            var relative = Math.Sqrt(error / norm);
            Assert.True(relative < 0.08, $"position {t}: relative RMS error {relative:E2}");
        }
    }

    private static void PrefillMatchesDequantizedReference(string name, WeightFormat format, int blockSize, int accuracyLevel, double tolerance)
    {
        var dir = name == "gpt2" ? Fixtures.TinyGpt2 : Fixtures.TinyLlama;
        var options = new RuntimeOptions { MaxBatch = 2, MaxContext = 64, Weights = format, WeightBlockSize = blockSize, WeightAccuracyLevel = accuracyLevel };
        using var model = DecoderModel.Load(dir, options);
        using var dec = new BatchDecoder(model);
        int[] prompt = [5, 17, 42, 99, 3, 250, 7, 8, 120, 64, 1];
        var logits = new float[prompt.Length * model.Config.VocabSize];
        dec.Prefill(dec.TryAllocate()!, prompt, null, logits);

        var reference = new ReferenceModel(dir, DequantizationDeltas(dir, format, blockSize));
        var (expected, _) = reference.Forward(prompt);
        var (fp32, _) = new ReferenceModel(dir).Forward(prompt);
        var v = model.Config.VocabSize;
        double moved = 0;
        for (var t = 0; t < prompt.Length; t++)
        {
            ReferenceLogitsTests.AssertClose(expected[t], logits.AsSpan(t * v, v), tolerance, $"{format} logits at position {t}");
            for (var i = 0; i < v; i++) moved = Math.Max(moved, Math.Abs(expected[t][i] - fp32[t][i]));
        }
        Assert.True(moved > 1e-3, $"the dequantised reference is not different from fp32 ({moved:E2}): the test checks nothing");
    }

    [Fact]
    public void Decode_Int4ThroughTheKvCacheWithAQuantisedHead_MatchesTheDequantizedReference()
    {
        var dir = Fixtures.TinyLlama;
        const int blockSize = 16;
        var options = new RuntimeOptions
        {
            MaxBatch = 2, MaxContext = 64, Weights = WeightFormat.Int4, WeightBlockSize = blockSize, WeightAccuracyLevel = 0, QuantizeHead = true,
        };
        using var model = DecoderModel.Load(dir, options);
        using var dec = new BatchDecoder(model);
        var deltas = DequantizationDeltas(dir, WeightFormat.Int4, blockSize, head: true);
        var reference = new ReferenceModel(dir, deltas);
        var tokens = new List<int> { 11, 22, 33, 44, 55 };
        var seq = dec.TryAllocate()!;
        var logits = dec.Prefill(seq, tokens.ToArray()).ToArray();
        for (var step = 0; step < 12; step++)
        {
            var next = ReferenceLogitsTests.ArgMax(logits);
            tokens.Add(next);
            seq.PendingToken = next;
            logits = dec.Decode().ToArray();
            AssertClose(reference.Forward(tokens).Logits[^1], logits, 1e-4, $"decode step {step}");
        }
        Assert.True(model.HeadWeightBytes < model.Config.VocabSize * model.Config.HiddenSize, "the head is held quantised");
    }

    /// <summary>
    /// QLoRA-style serving: the adapter's update stays fp32 on top of the quantised projection, through both adapter
    /// kernels; the reference is the dequantised base plus the merged update, and in a batch each row (base, two
    /// adapters of different rank) matches the reference of its own weights.
    /// </summary>
    [Theory]
    [InlineData("gpt2", AdapterKernelKind.Segmented)]
    [InlineData("llama", AdapterKernelKind.Segmented)]
    [InlineData("llama", AdapterKernelKind.BatchedMatMul)]
    public void Adapters_OnAnInt4Base_MatchTheDequantizedBasePlusTheMergedUpdate(string name, AdapterKernelKind kernel)
    {
        var dir = name == "gpt2" ? Fixtures.TinyGpt2 : Fixtures.TinyLlama;
        const int blockSize = 16;
        using var model = DecoderModel.Load(dir, new RuntimeOptions
        {
            MaxBatch = 3, MaxContext = 64, AdapterSlots = 2, AdapterKernel = kernel, Weights = WeightFormat.Int4, WeightBlockSize = blockSize, WeightAccuracyLevel = 0,
        });
        var c = model.Config;
        var x = AdapterTests.RandomModules(c, seed: 3, rankBase: 2);
        var y = AdapterTests.RandomModules(c, seed: 4, rankBase: 5);
        var quantization = DequantizationDeltas(dir, WeightFormat.Int4, blockSize);
        ReferenceModel With(List<LoraModule>? modules)
        {
            var deltas = new Dictionary<string, double[]>(quantization.ToDictionary(p => p.Key, p => (double[])p.Value.Clone()));
            if (modules is not null)
            {
                foreach (var (tensor, delta) in AdapterTests.MergedDeltas(c, (modules, 1.0)))
                {
                    if (deltas.TryGetValue(tensor, out var sum)) for (var i = 0; i < sum.Length; i++) sum[i] += delta[i];
                    else deltas[tensor] = delta;
                }
            }
            return new ReferenceModel(dir, deltas);
        }
        ReferenceModel[] references = [With(null), With(x), With(y)];
        int[] slots = [-1, 0, 1];
        int[][] prompts = [[1, 2, 3], [4, 5, 6, 7, 8], [9, 10]];

        using var dec = new BatchDecoder(model);
        dec.Adapters!.Write(0, AdapterFactors.FromLora(c, x));
        dec.Adapters.Write(1, AdapterFactors.FromLora(c, y));
        var tokens = prompts.Select(p => p.ToList()).ToArray();
        var seqs = new Sequence[3];
        for (var r = 0; r < 3; r++)
        {
            seqs[r] = dec.TryAllocate()!;
            dec.SetAdapter(seqs[r], slots[r]);
            var logits = dec.Prefill(seqs[r], prompts[r]).ToArray();
            ReferenceLogitsTests.AssertClose(references[r].Forward(tokens[r]).Logits[^1], logits, 1e-4, $"row {r} prefill");
        }
        for (var step = 0; step < 4; step++)
        {
            for (var r = 0; r < 3; r++)
            {
                var token = 20 + 7 * step + r;
                seqs[r].PendingToken = token;
                tokens[r].Add(token);
            }
            var logits = dec.Decode().ToArray();
            for (var r = 0; r < 3; r++)
            {
                var row = dec.Active.ToList().IndexOf(seqs[r]);
                ReferenceLogitsTests.AssertClose(references[r].Forward(tokens[r]).Logits[^1], logits.AsSpan(row * c.VocabSize, c.VocabSize), 1e-4, $"row {r} step {step}");
            }
        }
    }

    [Theory]
    [InlineData(WeightFormat.Int8)]
    [InlineData(WeightFormat.Int4)]
    public void Load_QuantizedFormats_HoldFewerProjectionBytes(WeightFormat format)
    {
        using var fp32 = DecoderModel.Load(Fixtures.TinyLlama, new RuntimeOptions { MaxBatch = 1, MaxContext = 32 });
        using var quantized = DecoderModel.Load(Fixtures.TinyLlama, new RuntimeOptions { MaxBatch = 1, MaxContext = 32, Weights = format });
        var ratio = (double)quantized.ProjectionWeightBytes / fp32.ProjectionWeightBytes;
        // int8: 1 byte + 4/32 scale bytes per value of 4; int4: 0.5 + 4/32 + 0.5/32 (padding of 48-wide blocks adds a little).
        Assert.InRange(ratio, format == WeightFormat.Int8 ? 0.25 : 0.12, format == WeightFormat.Int8 ? 0.40 : 0.26);
    }

    [Theory]
    [InlineData(48)]
    [InlineData(8)]
    [InlineData(512)]
    public void Options_BlockSizeOutOfRange_AreRefused(int blockSize)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new RuntimeOptions { Weights = WeightFormat.Int4, WeightBlockSize = blockSize }.Validate());
        Assert.Equal(nameof(RuntimeOptions.WeightBlockSize), e.ParamName);
    }

    /// <summary>
    /// What the engine should compute with, as updates to the checkpoint's own tensors: each projection quantised
    /// (<see cref="WeightQuantizer.Quantize"/>, the code under test) and dequantised by <see cref="IndependentDequantize"/>,
    /// minus the stored weight.
    /// </summary>
    private static Dictionary<string, double[]> DequantizationDeltas(string dir, WeightFormat format, int blockSize, bool head = false)
    {
        var c = ModelConfig.Load(Path.Combine(dir, "config.json"));
        using var file = SafetensorsFile.Open(Path.Combine(dir, "model.safetensors"));
        var deltas = new Dictionary<string, double[]>();
        // Engine layout [in, out] = checkpoint layout for GPT-2 (Conv1D); Llama stores [out, in].
        var gpt2 = c.Architecture == ModelArchitecture.Gpt2;
        void Add(string tensor)
        {
            var info = file.Get(tensor);
            var stored = file.ReadFloat32(tensor);
            int rows = (int)info.Shape[0], cols = (int)info.Shape[1];
            // Quantisation runs along the input dimension: rows for [in, out], columns for [out, in].
            var (k, n) = gpt2 ? (rows, cols) : (cols, rows);
            var q = WeightQuantizer.Quantize(stored, k, n, format, blockSize, transposed: !gpt2);
            var dq = IndependentDequantize(q.Data, q.Scales, q.ZeroPoints, k, n, q.Bits, blockSize); // [k, n]
            var delta = new double[stored.Length];
            for (var r = 0; r < rows; r++)
            {
                for (var col = 0; col < cols; col++)
                {
                    var value = gpt2 ? dq[r * n + col] : dq[col * n + r];
                    delta[r * cols + col] = value - (double)stored[r * cols + col];
                }
            }
            deltas[tensor] = delta;
        }
        for (var layer = 0; layer < c.NumLayers; layer++)
        {
            if (gpt2)
            {
                foreach (var t in new[] { "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj" }) Add($"transformer.h.{layer}.{t}.weight");
            }
            else
            {
                // The engine quantises q|k|v and gate|up fused; per-column blocks make that the same as each part alone.
                foreach (var t in new[] { "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj" })
                {
                    Add($"model.layers.{layer}.{t}.weight");
                }
            }
        }
        if (head)
        {
            if (gpt2 || c.TieWordEmbeddings) throw new ArgumentException("head quantisation is checked on an untied Llama here");
            // lm_head [V, d] is quantised along d: a [K = d, N = V] weight given transposed.
            var stored = file.ReadFloat32("lm_head.weight");
            int v = c.VocabSize, d = c.HiddenSize;
            var q = WeightQuantizer.Quantize(stored, d, v, format, blockSize, transposed: true);
            var dq = IndependentDequantize(q.Data, q.Scales, q.ZeroPoints, d, v, q.Bits, blockSize);
            var delta = new double[stored.Length];
            for (var token = 0; token < v; token++) for (var j = 0; j < d; j++) delta[token * d + j] = dq[j * v + token] - (double)stored[token * d + j];
            deltas["lm_head.weight"] = delta;
        }
        return deltas;
    }

    /// <summary>
    /// MatMulNBits' B as its specification states it, read as a bit stream: column n's blocks lie one after another,
    /// each ⌈block·bits/8⌉ bytes, values little-end first within a byte; zero points packed the same way per column
    /// (default 2^(bits−1)); W[k, n] = (q − zp) · scale[n·blocks + k/block]. Returns W [K, N].
    /// </summary>
    private static float[] IndependentDequantize(byte[] data, float[] scales, byte[]? zeroPoints, int k, int n, int bits, int block)
    {
        var blocks = (k + block - 1) / block;
        var blobBits = block * bits;
        var zpBytesPerColumn = (blocks * bits + 7) / 8;
        int ReadBits(byte[] bytes, long bitOffset)
        {
            var value = 0;
            for (var b = 0; b < bits; b++)
            {
                var at = bitOffset + b;
                value |= ((bytes[at / 8] >> (int)(at % 8)) & 1) << b;
            }
            return value;
        }
        var w = new float[k * n];
        for (var col = 0; col < n; col++)
        {
            for (var row = 0; row < k; row++)
            {
                var b = row / block;
                var q = ReadBits(data, ((long)col * blocks + b) * blobBits + (row % block) * bits);
                var zp = zeroPoints is null ? 1 << (bits - 1) : ReadBits(zeroPoints, (long)col * zpBytesPerColumn * 8 + b * bits);
                w[row * n + col] = (q - zp) * scales[col * blocks + b];
            }
        }
        return w;
    }

    private static void AssertClose(double[] expected, float[] actual, double tolerance, string what) =>
        ReferenceLogitsTests.AssertClose(expected, actual, tolerance, what);
}
