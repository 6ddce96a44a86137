using Serving.Checkpoints;
using Serving.Inference.Adapters;
using Serving.Inference.Engine;
using Serving.Inference.Runtime;
using Serving.Inference.Tests.Reference;
using Xunit;

namespace Serving.Inference.Tests.Engine;

/// <summary>
/// Adapter rows against an independent path: the float64 reference model with <c>ΔW = s·B·A</c> merged into the base
/// weights (computed here from the PEFT-oriented factors, not through <see cref="AdapterFactors"/>).
/// </summary>
public sealed class AdapterTests
{
    public static TheoryData<string> Models => ["gpt2", "llama"];

    /// <summary>Both model families on both adapter kernels (the segmented operator; the stock-ONNX batched graphs).</summary>
    public static TheoryData<string, AdapterKernelKind> ModelsAndKernels => new()
    {
        { "gpt2", AdapterKernelKind.Segmented },
        { "llama", AdapterKernelKind.Segmented },
        { "gpt2", AdapterKernelKind.BatchedMatMul },
        { "llama", AdapterKernelKind.BatchedMatMul },
    };

    public static TheoryData<AdapterKernelKind> Kernels => [AdapterKernelKind.Segmented, AdapterKernelKind.BatchedMatMul];

    private static string Dir(string name) => name == "gpt2" ? Fixtures.TinyGpt2 : Fixtures.TinyLlama;

    /// <summary>Random PEFT-oriented modules with mixed ranks and scales; some layers and modules left out.</summary>
    internal static List<LoraModule> RandomModules(ModelConfig c, int seed, int rankBase)
    {
        var rng = new Random(seed);
        string[] names = c.Architecture == ModelArchitecture.Gpt2
            ? ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]
            : ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"];
        var list = new List<LoraModule>();
        for (var l = 0; l < c.NumLayers; l++)
        {
            for (var m = 0; m < names.Length; m++)
            {
                if ((l + m + seed) % 5 == 4) continue; // leave some projections unadapted
                var (inDim, outDim) = ModuleShape(c, names[m]);
                var r = rankBase + (m + l) % 3;
                var a = new float[r * inDim];
                var b = new float[outDim * r];
                for (var i = 0; i < a.Length; i++) a[i] = (float)(rng.NextDouble() * 2 - 1) * 0.3f;
                for (var i = 0; i < b.Length; i++) b[i] = (float)(rng.NextDouble() * 2 - 1) * 0.3f;
                list.Add(new LoraModule(names[m], l, r, 0.5f + (float)rng.NextDouble(), a, b));
            }
        }
        return list;
    }

    private static (int In, int Out) ModuleShape(ModelConfig c, string module)
    {
        int d = c.HiddenSize, q = c.NumHeads * c.HeadDim, kv = c.NumKvHeads * c.HeadDim, f = c.IntermediateSize;
        return module switch
        {
            "attn.c_attn" => (d, 3 * d),
            "attn.c_proj" or "self_attn.o_proj" => (q, d),
            "mlp.c_fc" or "mlp.gate_proj" or "mlp.up_proj" => (d, f),
            "mlp.c_proj" or "mlp.down_proj" => (f, d),
            "self_attn.q_proj" => (d, q),
            _ => (d, kv),
        };
    }

    /// <summary>Σ weight·s·B·A per weight tensor, in the checkpoint's layout (GPT-2 Conv1D stores [in, out]).</summary>
    internal static Dictionary<string, double[]> MergedDeltas(ModelConfig c, params (IEnumerable<LoraModule> Modules, double Weight)[] adapters)
    {
        var deltas = new Dictionary<string, double[]>();
        var gpt2 = c.Architecture == ModelArchitecture.Gpt2;
        foreach (var (modules, weight) in adapters)
        {
            foreach (var m in modules)
            {
                var (inDim, outDim) = ModuleShape(c, m.Module);
                var name = (gpt2 ? $"transformer.h.{m.Layer}." : $"model.layers.{m.Layer}.") + m.Module + ".weight";
                if (!deltas.TryGetValue(name, out var delta)) deltas[name] = delta = new double[inDim * outDim];
                for (var o = 0; o < outDim; o++)
                {
                    for (var i = 0; i < inDim; i++)
                    {
                        double sum = 0;
                        for (var k = 0; k < m.Rank; k++) sum += (double)m.B[o * m.Rank + k] * m.A[k * inDim + i];
                        delta[gpt2 ? i * outDim + o : o * inDim + i] += weight * m.Scale * sum;
                    }
                }
            }
        }
        return deltas;
    }

    [Theory]
    [MemberData(nameof(ModelsAndKernels))]
    public void AdapterRow_PrefillAndDecode_MatchMergedFloat64Reference(string name, AdapterKernelKind kernel)
    {
        var dir = Dir(name);
        using var model = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = 2, MaxContext = 64, AdapterSlots = 2, AdapterKernel = kernel });
        using var dec = new BatchDecoder(model);
        var c = model.Config;
        var modules = RandomModules(c, seed: 7, rankBase: 2);
        dec.Adapters!.Write(1, AdapterFactors.FromLora(c, modules));
        var reference = new ReferenceModel(dir, MergedDeltas(c, (modules, 1.0)));
        var baseReference = new ReferenceModel(dir);

        List<int> prompt = [3, 141, 59, 26, 5];
        // The adapter must matter: the base model's logits differ clearly from the merged reference.
        Assert.True(MaxDiff(baseReference.Forward(prompt).Logits[^1], reference.Forward(prompt).Logits[^1]) > 1e-2, "the random adapter barely changes the logits");
        var seq = dec.TryAllocate()!;
        dec.SetAdapter(seq, 1);
        AssertGreedyRunMatches(dec, seq, reference, prompt, steps: 8);

        // A longer prompt: 18 tokens in one segment (four full shrink units and a partial one, several expand blocks).
        dec.Release(seq);
        var longSeq = dec.TryAllocate()!;
        dec.SetAdapter(longSeq, 1);
        var longPrompt = Enumerable.Range(0, 18).Select(i => 7 + 13 * i % 200).ToList();
        AssertGreedyRunMatches(dec, longSeq, reference, longPrompt, steps: 2);
    }

    /// <summary>Prefills <paramref name="prompt"/>, then decodes greedily, comparing every step's logits with the reference (≤ 1e-4).</summary>
    private static void AssertGreedyRunMatches(BatchDecoder dec, Sequence seq, ReferenceModel reference, List<int> prompt, int steps)
    {
        var tokens = new List<int>(prompt);
        var logits = dec.Prefill(seq, tokens.ToArray()).ToArray();
        ReferenceLogitsTests.AssertClose(reference.Forward(tokens).Logits[^1], logits, 1e-4, "prefill logits");
        for (var step = 0; step < steps; step++)
        {
            var next = ReferenceLogitsTests.ArgMax(logits);
            tokens.Add(next);
            seq.PendingToken = next;
            logits = dec.Decode().ToArray();
            ReferenceLogitsTests.AssertClose(reference.Forward(tokens).Logits[^1], logits, 1e-4, $"decode step {step}");
        }
    }

    [Theory]
    [MemberData(nameof(ModelsAndKernels))]
    public void BaseRows_OnAModelWithAdapterVariants_MatchFloat64Reference(string name, AdapterKernelKind kernel)
    {
        // With slots, every session of a layer reads shared weights supplied through AddInitializer (zero placeholders
        // in the graphs): the base blocks and each variant must still compute with the real weights.
        var dir = Dir(name);
        using var model = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = 2, MaxContext = 64, AdapterSlots = 3, AdapterKernel = kernel });
        var variants = kernel == AdapterKernelKind.Segmented ? model.LoraSegmentedBlocks : model.LoraBatchedBlocks;
        Assert.Equal(model.Config.NumLayers, variants.Length);
        using var dec = new BatchDecoder(model);
        AssertGreedyRunMatches(dec, dec.TryAllocate()!, new ReferenceModel(dir), [17, 4, 250, 31], steps: 4);
    }

    [Theory]
    [MemberData(nameof(ModelsAndKernels))]
    public void MixedBatch_BaseAdaptersOfDifferentRankAndAMerge_EachRowMatchesItsSoloRun(string name, AdapterKernelKind kernel)
    {
        var dir = Dir(name);
        using var model = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = 6, MaxContext = 64, AdapterSlots = 4, AdapterKernel = kernel });
        var c = model.Config;
        var x = AdapterFactors.FromLora(c, RandomModules(c, seed: 1, rankBase: 2));
        var y = AdapterFactors.FromLora(c, RandomModules(c, seed: 2, rankBase: 6));
        var merge = AdapterFactors.Merge(c, [(x, 0.5f), (y, 0.7f)]);
        Assert.NotEqual(x.MaxRank, y.MaxRank);
        // Rows: base, X, Y, merge, X again (two rows in one group), base again. X sits in slot 3: the batched graphs
        // first move it into block position 0 (an empty slot's place); the segmented operator reads it where it is.
        int[] slots = [-1, 3, 1, 2, 3, -1];
        int[][] prompts = [[1, 2, 3], [4, 5, 6, 7], [8, 9], [10, 11, 12, 13, 14], [15, 16], [17]];
        const int steps = 6;

        float[][] Solo(int row)
        {
            using var dec = new BatchDecoder(model, maxBatch: 1);
            Load(dec);
            var seq = dec.TryAllocate()!;
            dec.SetAdapter(seq, slots[row]);
            var outs = new List<float[]> { dec.Prefill(seq, prompts[row]).ToArray() };
            for (var s = 0; s < steps; s++)
            {
                seq.PendingToken = 20 + 3 * s + row;
                outs.Add(dec.Decode().ToArray());
            }
            return [.. outs];
        }

        void Load(BatchDecoder dec)
        {
            dec.Adapters!.Write(3, x);
            dec.Adapters.Write(1, y);
            dec.Adapters.Write(2, merge);
        }

        var solo = Enumerable.Range(0, slots.Length).Select(Solo).ToArray();
        using var batch = new BatchDecoder(model);
        Load(batch);
        var seqs = new Sequence[slots.Length];
        for (var r = 0; r < slots.Length; r++)
        {
            seqs[r] = batch.TryAllocate()!;
            batch.SetAdapter(seqs[r], slots[r]);
            AssertRowClose(solo[r][0], batch.Prefill(seqs[r], prompts[r]), $"row {r} prefill");
        }
        for (var s = 0; s < steps; s++)
        {
            for (var r = 0; r < slots.Length; r++) seqs[r].PendingToken = 20 + 3 * s + r;
            var logits = batch.Decode();
            for (var r = 0; r < slots.Length; r++)
            {
                AssertRowClose(solo[r][s + 1], logits.Slice(r * c.VocabSize, c.VocabSize), $"row {r} step {s}");
            }
        }
        Assert.Equal(steps, batch.MixedAdapterSteps);
        if (kernel == AdapterKernelKind.Segmented)
        {
            // The operator offers ONNX Runtime to add the update into the projection's own output buffer; in these
            // graphs every projection output feeds only the operator, so the reuse must be granted.
            var (runs, inPlace) = SegmentedLoraOp.Counts;
            Assert.True(runs > 0 && inPlace > 0, $"{inPlace} of {runs} SegmentedLora runs were in place");
        }
        if (kernel == AdapterKernelKind.BatchedMatMul) Assert.True(batch.Adapters!.Swaps > 0, "slot 3 should have been moved into the first G block positions");
        else Assert.Equal(0, batch.Adapters!.Swaps);
        // Rows 1 and 4 share adapter X; with the base in its place row 1 would differ (the adapters are not ignored).
        slots[1] = -1;
        Assert.True(MaxDiff(solo[1][^1], Solo(1)[^1]) > 1e-3, "adapter X does not change row 1");
    }

    [Fact]
    public void MixedBatch_GroupsFillTheGridExactly_BaseRowStillReadsAZeroUpdate()
    {
        // Two groups of two rows and one base row: the [G, T] grid has no padding entry of its own, so the decoder adds
        // a padding column for the base row to read. Every row must match its solo run.
        using var model = DecoderModel.Load(Fixtures.TinyLlama, new RuntimeOptions { MaxBatch = 5, MaxContext = 32, AdapterSlots = 2, AdapterKernel = AdapterKernelKind.BatchedMatMul });
        var c = model.Config;
        var x = AdapterFactors.FromLora(c, RandomModules(c, seed: 7, rankBase: 2));
        var y = AdapterFactors.FromLora(c, RandomModules(c, seed: 8, rankBase: 3));
        int[] slots = [0, 1, -1, 1, 0];

        BatchDecoder Decoder(int maxBatch)
        {
            var dec = new BatchDecoder(model, maxBatch);
            dec.Adapters!.Write(0, x);
            dec.Adapters.Write(1, y);
            return dec;
        }

        void AddRow(BatchDecoder dec, int row)
        {
            var seq = dec.TryAllocate()!;
            dec.SetAdapter(seq, slots[row]);
            dec.Prefill(seq, [1 + row, 2, 3]);
            seq.PendingToken = 9 + row;
        }

        float[] Solo(int row)
        {
            using var dec = Decoder(1);
            AddRow(dec, row);
            return dec.Decode().ToArray();
        }

        using var batch = Decoder(slots.Length);
        for (var r = 0; r < slots.Length; r++) AddRow(batch, r);
        var logits = batch.Decode();
        Assert.Equal(1, batch.MixedAdapterSteps);
        Assert.Equal(2 * 3, batch.AdapterGridEntriesDecoded); // T = 2 rows per group + the padding column
        for (var r = 0; r < slots.Length; r++) AssertRowClose(Solo(r), logits.Slice(r * c.VocabSize, c.VocabSize), $"row {r}");
    }

    [Fact]
    public void SlotTable_Compact_MovesTheListedSlotsToTheFrontAndKeepsEverySlotsContent()
    {
        var c = ModelConfig.Load(Path.Combine(Fixtures.TinyLlama, "config.json"));
        using var table = new AdapterSlotTable(c, 5, maxRank: 8);
        var adapters = new AdapterFactors?[5];
        for (var s = 0; s < 4; s++) table.Write(s, adapters[s] = AdapterFactors.FromLora(c, RandomModules(c, seed: 40 + s, rankBase: 1 + s)));
        var rng = new Random(7);
        for (var round = 0; round < 30; round++)
        {
            // A random subset (including the empty slot 4 sometimes), in random order.
            var listed = Enumerable.Range(0, 5).Where(_ => rng.Next(2) == 0).OrderBy(_ => rng.Next()).ToArray();
            if (round % 5 == 4)
            {
                // Rewrite a slot with another rank: what a larger adapter left past the new rank must read as zero.
                var w = rng.Next(5);
                table.Write(w, adapters[w] = AdapterFactors.FromLora(c, RandomModules(c, seed: 60 + round, rankBase: 1 + rng.Next(4))));
            }
            if (listed.Length == 0) continue;
            table.Compact(listed);
            Assert.All(listed, s => Assert.True(table.PositionOf(s) < listed.Length, $"round {round}: slot {s} at {table.PositionOf(s)}"));
            Assert.Equal(5, Enumerable.Range(0, 5).Select(table.PositionOf).Distinct().Count());
            for (var s = 0; s < 5; s++)
            {
                Assert.Same(adapters[s], table[s]);
                for (var l = 0; l < c.NumLayers; l++)
                {
                    for (var p = 0; p < AdapterFactors.ProjectionCount; p++)
                    {
                        var projection = (AdaptedProjection)p;
                        var u = adapters[s]?.Get(l, projection);
                        Assert.Equal(u?.A ?? [], table.A(s, l, projection).GetTensorDataAsSpan<float>().ToArray());
                        Assert.Equal(u?.B ?? [], table.B(s, l, projection).GetTensorDataAsSpan<float>().ToArray());
                        // The stacked view's block at the slot's position: its factors, then zeros to the capacity.
                        var stackedA = table.StackedA(l, projection, 5).GetTensorDataAsSpan<float>();
                        var block = stackedA.Length / 5;
                        var mine = stackedA.Slice(table.PositionOf(s) * block, block).ToArray();
                        var expected = new float[block];
                        u?.A.CopyTo(expected, 0);
                        Assert.Equal(expected, mine);
                    }
                }
            }
        }
        Assert.True(table.Swaps > 0);
    }

    [Fact]
    public void Merge_MatchesWeightedSumOfDeltasInTheReference()
    {
        var dir = Fixtures.TinyLlama;
        using var model = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = 1, MaxContext = 32, AdapterSlots = 1 });
        using var dec = new BatchDecoder(model);
        var c = model.Config;
        var mx = RandomModules(c, seed: 3, rankBase: 2);
        var my = RandomModules(c, seed: 4, rankBase: 3);
        dec.Adapters!.Write(0, AdapterFactors.Merge(c, [(AdapterFactors.FromLora(c, mx), 0.25f), (AdapterFactors.FromLora(c, my), -0.6f)]));
        var seq = dec.TryAllocate()!;
        dec.SetAdapter(seq, 0);
        int[] prompt = [9, 8, 7, 6];
        var logits = dec.Prefill(seq, prompt).ToArray();
        var reference = new ReferenceModel(dir, MergedDeltas(c, (mx, 0.25), (my, -0.6)));
        ReferenceLogitsTests.AssertClose(reference.Forward(prompt).Logits[^1], logits, 1e-4, "merged adapter");
    }

    [Theory]
    [MemberData(nameof(Kernels))]
    public void HotSwap_RewritingASlotBetweenSteps_TakesEffectWithoutRebuildingAnything(AdapterKernelKind kernel)
    {
        var dir = Fixtures.TinyGpt2;
        using var model = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = 2, MaxContext = 32, AdapterSlots = 1, AdapterKernel = kernel });
        using var dec = new BatchDecoder(model);
        var c = model.Config;
        var mx = RandomModules(c, seed: 5, rankBase: 2);
        var my = RandomModules(c, seed: 6, rankBase: 5);
        int[] prompt = [1, 2, 3];

        float[] RunOnce()
        {
            var seq = dec.TryAllocate()!;
            dec.SetAdapter(seq, 0);
            dec.Prefill(seq, prompt);
            seq.PendingToken = 4;
            var logits = dec.Decode().ToArray(); // batch-1 adapter bindings are cached across calls
            dec.Release(seq);
            return logits;
        }

        dec.Adapters!.Write(0, AdapterFactors.FromLora(c, mx));
        var withX = RunOnce();
        dec.Adapters.Write(0, AdapterFactors.FromLora(c, my));
        var withY = RunOnce();
        int[] tokens = [1, 2, 3, 4];
        ReferenceLogitsTests.AssertClose(new ReferenceModel(dir, MergedDeltas(c, (mx, 1.0))).Forward(tokens).Logits[^1], withX, 1e-4, "before the swap");
        ReferenceLogitsTests.AssertClose(new ReferenceModel(dir, MergedDeltas(c, (my, 1.0))).Forward(tokens).Logits[^1], withY, 1e-4, "after the swap");
    }

    [Theory]
    [MemberData(nameof(Kernels))]
    public void Decode_WithMixedAdapterGroups_AllocatesNothingPerStep(AdapterKernelKind kernel)
    {
        using var model = DecoderModel.Load(Fixtures.TinyLlama, new RuntimeOptions { MaxBatch = 4, MaxContext = 128, AdapterSlots = 2, AdapterKernel = kernel });
        using var dec = new BatchDecoder(model);
        var c = model.Config;
        dec.Adapters!.Write(0, AdapterFactors.FromLora(c, RandomModules(c, seed: 1, rankBase: 2)));
        dec.Adapters.Write(1, AdapterFactors.FromLora(c, RandomModules(c, seed: 2, rankBase: 4)));
        int[] slots = [0, -1, 1, 0];
        for (var i = 0; i < 4; i++)
        {
            var seq = dec.TryAllocate()!;
            dec.SetAdapter(seq, slots[i]);
            seq.PendingToken = ReferenceLogitsTests.ArgMax(dec.Prefill(seq, [1 + i, 2, 3]));
        }
        var v = c.VocabSize;
        void Step()
        {
            var logits = dec.Decode();
            for (var r = 0; r < dec.ActiveCount; r++) dec.Active[r].PendingToken = ReferenceLogitsTests.ArgMax(logits.Slice(r * v, v));
        }
        // Bindings for this (batch, variant) are created and bound once, in the warm-up.
        AllocationProbe.AssertNoAllocation(Step, "an adapter decode step");
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void FromLora_Consuming_GivesTheSameUpdatesAndReusesTheModulesB(string name)
    {
        var c = ModelConfig.Load(Path.Combine(Dir(name), "config.json"));
        var copied = AdapterFactors.FromLora(c, RandomModules(c, seed: 3, rankBase: 2));
        var handed = RandomModules(c, seed: 3, rankBase: 2);
        var original = RandomModules(c, seed: 3, rankBase: 2); // untouched copy for the direct check below
        var consumed = AdapterFactors.FromLora(c, handed, consume: true);
        var reused = 0;
        for (var layer = 0; layer < c.NumLayers; layer++)
        {
            foreach (var projection in Enum.GetValues<AdaptedProjection>())
            {
                var x = copied.Get(layer, projection);
                var y = consumed.Get(layer, projection);
                Assert.Equal(x is null, y is null);
                if (x is null || y is null) continue;
                Assert.Equal(x.Rank, y.Rank);
                Assert.Equal(x.A, y.A);
                Assert.Equal(x.B, y.B);
                if (handed.FindIndex(m => ReferenceEquals(m.B, y.B)) is var i and >= 0)
                {
                    // Transposed and scaled in place: B'[k, o] = s·B[o, k], checked against the untouched module.
                    var m = original[i];
                    var outDim = m.B.Length / m.Rank;
                    for (var k = 0; k < m.Rank; k++)
                    {
                        for (var o = 0; o < outDim; o++) Assert.Equal(m.Scale * m.B[o * m.Rank + k], y.B[k * outDim + o]);
                    }
                    reused++;
                }
            }
        }
        // GPT-2's modules each cover a whole projection, so every update reuses its module's B; Llama's q/k/v and
        // gate/up are stacked from several modules and still copy.
        Assert.True(reused > 0, "no update reused its module's B array");
    }

    [Fact]
    public void BadAdapters_AreRefusedWithTheModuleNamed()
    {
        var c = ModelConfig.Load(Path.Combine(Fixtures.TinyLlama, "config.json"));
        var good = RandomModules(c, seed: 1, rankBase: 2);
        var unknown = good.Take(1).Select(m => m with { Module = "self_attn.x_proj" });
        Assert.Contains("x_proj", Assert.Throws<ArgumentException>(() => AdapterFactors.FromLora(c, unknown)).Message);
        var badLayer = good.Take(1).Select(m => m with { Layer = 99 });
        Assert.Contains("99", Assert.Throws<ArgumentException>(() => AdapterFactors.FromLora(c, badLayer)).Message);
        var badShape = good.Take(1).Select(m => m with { A = new float[3] });
        Assert.Contains("expected A", Assert.Throws<ArgumentException>(() => AdapterFactors.FromLora(c, badShape)).Message);

        using var table = new AdapterSlotTable(c, 1, maxRank: 2);
        var tooBig = AdapterFactors.FromLora(c, RandomModules(c, seed: 1, rankBase: 3));
        Assert.Contains("exceeds the slot capacity", Assert.Throws<ArgumentException>(() => table.Write(0, tooBig)).Message);
        Assert.Null(table[0]);
    }

    [Fact]
    public void SetAdapter_OnAnEmptySlotOrAModelWithoutSlots_Throws()
    {
        using var plain = DecoderModel.Load(Fixtures.TinyGpt2, new RuntimeOptions { MaxBatch = 1, MaxContext = 16 });
        using var dec = new BatchDecoder(plain);
        Assert.Null(dec.Adapters);
        Assert.Throws<InvalidOperationException>(() => dec.SetAdapter(dec.TryAllocate()!, 0));

        using var withSlots = DecoderModel.Load(Fixtures.TinyGpt2, new RuntimeOptions { MaxBatch = 1, MaxContext = 16, AdapterSlots = 2 });
        using var dec2 = new BatchDecoder(withSlots);
        Assert.Throws<InvalidOperationException>(() => dec2.SetAdapter(dec2.TryAllocate()!, 1));
    }

    private static void AssertRowClose(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (var i = 0; i < expected.Length; i++)
        {
            if (Math.Abs(expected[i] - actual[i]) > 1e-5) Assert.Fail($"{what}: logit {i} is {actual[i]}, alone {expected[i]}");
        }
    }

    private static double MaxDiff(IReadOnlyList<double> a, IReadOnlyList<double> b) => a.Select((v, i) => Math.Abs(v - b[i])).Max();

    private static double MaxDiff(float[] a, float[] b) => a.Select((v, i) => (double)Math.Abs(v - b[i])).Max();
}
