using Serving.Checkpoints;
using Serving.Fixtures;
using Serving.Inference.Adapters;
using Serving.Inference.Engine;
using Serving.Inference.Runtime;
using Serving.Inference.Tests.Reference;
using Xunit;

namespace Serving.Inference.Tests.Engine;

/// <summary>
/// Every Llama-architecture family and rotary variant against <see cref="FamilyReference"/> (float64, written
/// independently of the graph builder): two rows with prompts of 40 and 47 tokens, prefilled one by one (every prompt
/// position checked), then 16 decode steps in one batch with the rows at different positions. The fixtures' lengths
/// make the prompts and decode steps cross each threshold (dynamic/yarn's original 32 positions, the 24/30-token
/// sliding windows, Gemma's window on layer 0 only).
/// </summary>
public sealed class FamilyLogitsTests
{
    private const double Tolerance = 1e-4;

    public static TheoryData<string> Families => new(FamilyFixtures.Names);

    /// <summary>The families whose attention differs from plain causal attention (windows, soft-capping, a custom scale) or whose keys need more than a projection (q/k norms, partial rotary).</summary>
    public static TheoryData<string> PackedFamilies => ["tiny-mistral", "tiny-gemma2", "tiny-qwen3", "tiny-phi3", "tiny-llama-yarn"];

    private static string Dir(string name) => Fixtures.Checkpoint(name, FamilyFixtures.All[name]);

    [Theory]
    [MemberData(nameof(Families))]
    public void PrefillThenBatchedDecode_TwoRowsAtDifferentPositions_MatchFloat64Reference(string name) =>
        RunAndCompare(name, packed: false);

    [Theory]
    [MemberData(nameof(PackedFamilies))]
    public void PackedSteps_TwoRowsAtDifferentPositions_MatchFloat64Reference(string name) =>
        RunAndCompare(name, packed: true);

    /// <summary>
    /// The same run on fp16 blocks (<see cref="ComputePrecision.Float16"/>, the CUDA node's arithmetic, run here by the
    /// CPU provider): every logit within 1e-2 of the largest |logit| of its row — windows, soft-caps, q/k norms and
    /// partial rotary included, through GroupQueryAttention on an fp16 cache.
    /// </summary>
    [Theory]
    [MemberData(nameof(Families))]
    public void Float16_PrefillThenBatchedDecode_MatchFloat64ReferenceWithinFp16Error(string name) =>
        RunAndCompare(name, packed: false, half: true);

    private static void AssertClose(double[] expected, ReadOnlySpan<float> actual, bool half, string what) =>
        ReferenceLogitsTests.AssertClose(expected, actual, half ? 1e-2 * expected.Max(Math.Abs) : Tolerance, what);

    private static void RunAndCompare(string name, bool packed, bool half = false)
    {
        var dir = Dir(name);
        using var model = DecoderModel.Load(dir, new RuntimeOptions
        {
            MaxBatch = 2, MaxContext = 128, PackedSteps = packed, Precision = half ? ComputePrecision.Float16 : ComputePrecision.Float32,
        });
        using var dec = new BatchDecoder(model);
        var reference = new FamilyReference(dir);
        var v = model.Config.VocabSize;
        var rng = new Random(7);
        var rows = new List<List<int>>();
        foreach (var length in new[] { 40, 47 })
        {
            var prompt = Enumerable.Range(0, length).Select(_ => rng.Next(0, v)).ToList();
            var seq = dec.TryAllocate()!;
            var all = new float[length * v];
            var last = dec.Prefill(seq, prompt.ToArray(), allLogits: all);
            var expected = reference.Forward(prompt);
            for (var t = 0; t < length; t++)
            {
                AssertClose(expected[t], all.AsSpan(t * v, v), half, $"{name}: prompt of {length}, position {t}");
            }
            seq.PendingToken = ReferenceLogitsTests.ArgMax(last);
            prompt.Add(seq.PendingToken);
            rows.Add(prompt);
        }
        for (var step = 0; step < 16; step++)
        {
            var logits = dec.Decode().ToArray();
            for (var r = 0; r < rows.Count; r++)
            {
                var expected = reference.Forward(rows[r]);
                var row = logits.AsSpan(r * v, v);
                AssertClose(expected[^1], row, half, $"{name}: row {r} at position {rows[r].Count - 1} (decode step {step})");
                var next = ReferenceLogitsTests.ArgMax(row);
                dec.Active[r].PendingToken = next;
                rows[r].Add(next);
            }
        }
    }

    /// <summary>
    /// Prompts fed as chunks of mixed steps (several tokens of a row attend together in <c>SlotAttention</c>, blocks of
    /// queries crossing the sliding windows and soft-capping): two rows in the same steps with different chunkings, the
    /// last token of every chunk against the float64 reference at its position.
    /// </summary>
    [Theory]
    [MemberData(nameof(PackedFamilies))]
    public void MixedSteps_PromptsInChunks_MatchFloat64Reference(string name)
    {
        var dir = Dir(name);
        using var model = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = 2, MaxContext = 128, PackedSteps = true });
        using var dec = new BatchDecoder(model);
        var reference = new FamilyReference(dir);
        var v = model.Config.VocabSize;
        var rng = new Random(11);
        int[][] chunkings = [[5, 13, 22], [1, 30, 9]];
        var prompts = chunkings.Select(c => Enumerable.Range(0, c.Sum()).Select(_ => rng.Next(0, v)).ToArray()).ToArray();
        var expected = prompts.Select(p => reference.Forward(p.ToList())).ToArray();
        var seqs = prompts.Select(_ => dec.TryAllocate()!).ToArray();
        var offsets = new int[2];
        for (var step = 0; step < 3; step++)
        {
            dec.BeginStep();
            for (var r = 0; r < 2; r++) dec.AddToStep(seqs[r], prompts[r].AsSpan(offsets[r], chunkings[r][step]));
            var logits = dec.RunStep().ToArray();
            for (var r = 0; r < 2; r++)
            {
                offsets[r] += chunkings[r][step];
                var position = offsets[r] - 1;
                ReferenceLogitsTests.AssertClose(expected[r][position], logits.AsSpan(r * v, v), Tolerance, $"{name}: row {r}, chunk {step} ending at position {position}");
            }
        }
    }

    /// <summary>
    /// Heads 80 wide (a 64-column block and a remainder in the decode-row attention kernel), from the Llama fixture: only
    /// here do the packed steps' one-query kernels run their wide paths.
    /// </summary>
    private static readonly FixtureShape WideHeads = FamilyFixtures.All["tiny-llama-linear"] with { Heads = 2, KvHeads = 1, HeadDim = 80 };

    /// <summary>14 query heads on 7 KV heads: a decode row's heads go in groups of six (6, 6, 2), a KV head shared across a group.</summary>
    private static readonly FixtureShape ManyHeads = FamilyFixtures.All["tiny-llama-linear"] with { Heads = 14, KvHeads = 7, HeadDim = 16 };

    public static TheoryData<string> DecodeRowFamilies => ["tiny-llama-hd80", "tiny-llama-h14", "tiny-mistral", "tiny-gemma2"];

    /// <summary>
    /// Decode rows through mixed steps (one query per row in <c>SlotAttention</c>: the four-keys-at-a-time scores and
    /// the value rows read once per 64 columns): two rows prefilled to 21 and 30 tokens, then 14 mixed steps of decode
    /// rows only, so the rows' lengths pass through every remainder of four and the sliding windows (24) and soft-caps
    /// bite; each step's logits against the float64 reference.
    /// </summary>
    [Theory]
    [MemberData(nameof(DecodeRowFamilies))]
    public void MixedSteps_DecodeRows_MatchFloat64Reference(string name)
    {
        var dir = name switch
        {
            "tiny-llama-hd80" => Fixtures.Checkpoint(name, WideHeads),
            "tiny-llama-h14" => Fixtures.Checkpoint(name, ManyHeads),
            _ => Dir(name),
        };
        using var model = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = 2, MaxContext = 128, PackedSteps = true });
        Assert.True(name != "tiny-llama-hd80" || model.Config.HeadDim == 80, "the wide fixture has 80-wide heads");
        using var dec = new BatchDecoder(model);
        var reference = new FamilyReference(dir);
        var v = model.Config.VocabSize;
        var rng = new Random(13);
        var rows = new List<List<int>>();
        var seqs = new List<Sequence>();
        foreach (var length in new[] { 21, 30 })
        {
            var prompt = Enumerable.Range(0, length).Select(_ => rng.Next(0, v)).ToList();
            var seq = dec.TryAllocate()!;
            seq.PendingToken = ReferenceLogitsTests.ArgMax(dec.Prefill(seq, prompt.ToArray()));
            prompt.Add(seq.PendingToken);
            rows.Add(prompt);
            seqs.Add(seq);
        }
        for (var step = 0; step < 14; step++)
        {
            dec.BeginStep();
            foreach (var seq in seqs) dec.AddToStep(seq);
            var logits = dec.RunStep().ToArray();
            for (var r = 0; r < rows.Count; r++)
            {
                var expected = reference.Forward(rows[r]);
                var row = logits.AsSpan(r * v, v);
                ReferenceLogitsTests.AssertClose(expected[^1], row, Tolerance, $"{name}: row {r} at position {rows[r].Count - 1} (mixed decode step {step})");
                seqs[r].PendingToken = ReferenceLogitsTests.ArgMax(row);
                rows[r].Add(seqs[r].PendingToken);
            }
        }
    }

    public static TheoryData<string> AdapterFamilies => ["tiny-phi3", "tiny-qwen3", "tiny-gemma2", "tiny-llama3"];

    /// <summary>
    /// A LoRA on every projection of the family (Phi-3's fused <c>qkv_proj</c>/<c>gate_up_proj</c> included) written to a
    /// slot: prefill and decode match the reference with <c>ΔW = s·B·A</c> merged into the stored weights.
    /// </summary>
    [Theory]
    [MemberData(nameof(AdapterFamilies))]
    public void AdapterRow_OnEveryProjectionOfTheFamily_MatchesMergedFloat64Reference(string name)
    {
        var dir = Dir(name);
        using var model = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = 2, MaxContext = 128, AdapterSlots = 2 });
        using var dec = new BatchDecoder(model);
        var c = model.Config;
        string[] modules = c.FusedProjections
            ? ["self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"]
            : ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"];
        int d = c.HiddenSize, q = c.NumHeads * c.HeadDim, kv = c.NumKvHeads * c.HeadDim, f = c.IntermediateSize;
        (int In, int Out) Shape(string m) => m switch
        {
            "self_attn.qkv_proj" => (d, q + 2 * kv),
            "self_attn.q_proj" => (d, q),
            "self_attn.k_proj" or "self_attn.v_proj" => (d, kv),
            "self_attn.o_proj" => (q, d),
            "mlp.gate_up_proj" => (d, 2 * f),
            "mlp.down_proj" => (f, d),
            _ => (d, f),
        };
        var rng = new Random(3);
        var lora = new List<LoraModule>();
        var deltas = new Dictionary<string, double[]>();
        for (var l = 0; l < c.NumLayers; l++)
        {
            foreach (var m in modules)
            {
                var (inDim, outDim) = Shape(m);
                const int r = 3;
                var a = Enumerable.Range(0, r * inDim).Select(_ => (float)(rng.NextDouble() * 2 - 1) * 0.3f).ToArray();
                var b = Enumerable.Range(0, outDim * r).Select(_ => (float)(rng.NextDouble() * 2 - 1) * 0.3f).ToArray();
                const float scale = 0.75f;
                lora.Add(new LoraModule(m, l, r, scale, a, b));
                var delta = new double[outDim * inDim];
                for (var o = 0; o < outDim; o++)
                {
                    for (var i = 0; i < inDim; i++)
                    {
                        double sum = 0;
                        for (var k = 0; k < r; k++) sum += (double)b[o * r + k] * a[k * inDim + i];
                        delta[o * inDim + i] = scale * sum;
                    }
                }
                deltas[$"model.layers.{l}.{m}.weight"] = delta;
            }
        }
        dec.Adapters!.Write(1, AdapterFactors.FromLora(c, lora));
        var reference = new FamilyReference(dir, deltas);
        var prompt = Enumerable.Range(0, 40).Select(i => (i * 37 + 11) % c.VocabSize).ToList();
        var expected = reference.Forward(prompt)[^1];
        Assert.True(expected.Zip(new FamilyReference(dir).Forward(prompt)[^1], (x, y) => Math.Abs(x - y)).Max() > 1e-2, "the adapter barely changes the logits");
        var seq = dec.TryAllocate()!;
        dec.SetAdapter(seq, 1);
        var logits = dec.Prefill(seq, prompt.ToArray()).ToArray();
        ReferenceLogitsTests.AssertClose(expected, logits, Tolerance, $"{name}: adapter prefill");
        for (var step = 0; step < 4; step++)
        {
            var next = ReferenceLogitsTests.ArgMax(logits);
            prompt.Add(next);
            seq.PendingToken = next;
            logits = dec.Decode().ToArray();
            ReferenceLogitsTests.AssertClose(reference.Forward(prompt)[^1], logits, Tolerance, $"{name}: adapter decode step {step}");
        }
    }
}
