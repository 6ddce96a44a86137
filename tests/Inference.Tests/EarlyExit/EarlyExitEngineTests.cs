using Serving.Checkpoints;
using Serving.Inference.Adapters;
using Serving.Inference.EarlyExit;
using Serving.Inference.Engine;
using Serving.Inference.Runtime;
using Serving.Inference.Tests.Engine;
using Serving.Inference.Tests.Reference;
using Xunit;

namespace Serving.Inference.Tests.EarlyExit;

/// <summary>Exits at a fixed layer for every token (a test criterion: the engine's mechanics without a model's confidence).</summary>
internal sealed class FixedLayer(int layer) : IExitCriterion
{
    public ExitCriterionKind Kind => ExitCriterionKind.Probe;
    public int ScratchSize => 0;
    public int StateSize => 0;
    public float Confidence(ref ExitView view) => view.Layer == layer ? 1f : 0f;
}

/// <summary>
/// Packed steps and early exit against the float64 reference that implements CALM's semantics independently (positions
/// keep their hidden state after their exit layer and still give every skipped block its keys and values).
/// </summary>
public sealed class EarlyExitEngineTests
{
    public static TheoryData<string> Models => ["gpt2", "llama"];

    private static string Dir(string name) => name == "gpt2" ? Fixtures.TinyGpt2 : Fixtures.TinyLlama;

    /// <summary>
    /// Rows exiting at different layers in one batch, and at a different layer at every step (so later tokens attend to
    /// propagated K/V of blocks earlier tokens skipped): every decode step's logits equal the reference's with each
    /// row's exits, and each row equals what it gets alone.
    /// </summary>
    [Theory]
    [MemberData(nameof(Models))]
    public void Batch_RowsExitingAtDifferentLayers_MatchTheFloat64ReferenceAndTheirSoloRuns(string name)
    {
        var dir = Dir(name);
        using var model = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = 4, MaxContext = 64, PackedSteps = true });
        var layers = model.Config.NumLayers;
        int?[][] exitsPerStep =
        [
            [1, 2, null, 3, 1],
            [2, null, 1, 1, 2],
            [null, null, null, null, null],
            [3, 1, 2, null, 3],
        ];
        foreach (var row in exitsPerStep) for (var i = 0; i < row.Length; i++) if (row[i] >= layers) row[i] = layers - 1;
        int[][] prompts = [[3, 141, 59], [7, 8, 9, 10, 11], [20], [31, 32]];
        const int steps = 5;
        var reference = new ReferenceModel(dir);

        List<float[]>[] Run(int[] rows)
        {
            using var dec = new BatchDecoder(model, rows.Length);
            var seqs = rows.Select(r =>
            {
                var seq = dec.TryAllocate()!;
                dec.Prefill(seq, prompts[r]);
                return seq;
            }).ToArray();
            var outs = rows.Select(_ => new List<float[]>()).ToArray();
            for (var s = 0; s < steps; s++)
            {
                for (var i = 0; i < rows.Length; i++)
                {
                    seqs[i].PendingToken = 40 + 7 * s + rows[i];
                    dec.SetExitPolicy(seqs[i], exitsPerStep[rows[i]][s] is int e ? new ExitPolicy(new FixedLayer(e), 0.5f) : null);
                }
                var logits = dec.Decode().ToArray();
                var v = model.Config.VocabSize;
                for (var i = 0; i < rows.Length; i++)
                {
                    outs[i].Add(logits.AsSpan(i * v, v).ToArray());
                    Assert.Equal(exitsPerStep[rows[i]][s] ?? layers, seqs[i].LastLayers);
                }
            }
            return outs;
        }

        var batch = Run([0, 1, 2, 3]);
        for (var r = 0; r < prompts.Length; r++)
        {
            var tokens = prompts[r].ToList();
            var exitLayers = Enumerable.Repeat(layers, prompts[r].Length).ToList();
            for (var s = 0; s < steps; s++)
            {
                tokens.Add(40 + 7 * s + r);
                exitLayers.Add(exitsPerStep[r][s] ?? layers);
                var expected = reference.Forward(tokens, exitLayers).Logits[^1];
                ReferenceLogitsTests.AssertClose(expected, batch[r][s], 1e-4, $"row {r} (exit {exitsPerStep[r][s]}) step {s}");
            }
            var solo = Run([r])[0];
            for (var s = 0; s < steps; s++) ReferenceLogitsTests.AssertClose(solo[s].Select(x => (double)x).ToArray(), batch[r][s], 1e-5, $"row {r} solo vs batch step {s}");
        }
    }

    /// <summary>The K/V a skipped block gets are exactly what the block would write for the exited hidden state (read back from the cache).</summary>
    [Theory]
    [MemberData(nameof(Models))]
    public void StatePropagation_WritesTheKeysAndValuesAFullPassWouldWriteForTheExitState(string name)
    {
        var dir = Dir(name);
        using var model = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = 2, MaxContext = 32, PackedSteps = true });
        var c = model.Config;
        var reference = new ReferenceModel(dir);
        using var dec = new BatchDecoder(model, 2);
        var other = dec.TryAllocate()!;
        dec.Prefill(other, [5, 6, 7, 8]);
        var seq = dec.TryAllocate()!; // slot 1: exits at layer 1
        dec.SetExitPolicy(seq, new ExitPolicy(new FixedLayer(1), 0.5f));
        int[] prompt = [11, 12, 13];
        dec.Prefill(seq, prompt);
        seq.PendingToken = 99;
        other.PendingToken = 98;
        dec.Decode();

        var tokens = prompt.Append(99).ToList();
        var exitLayers = new[] { c.NumLayers, c.NumLayers, c.NumLayers, 1 };
        var hidden = reference.Forward(tokens, exitLayers).Hidden;
        var d = c.HiddenSize;
        var exitState = hidden[1].Skip(3 * d).Take(d).ToArray();
        var kv = model.Config.NumKvHeads * c.HeadDim;
        for (var l = 1; l < c.NumLayers; l++)
        {
            var (key, value) = reference.KeyValue(l, exitState, position: 3);
            var (k, v) = CacheEntry(dec, l, seq.Slot, 3);
            ReferenceLogitsTests.AssertClose(key, k, 1e-4, $"propagated key of block {l}");
            ReferenceLogitsTests.AssertClose(value, v, 1e-4, $"propagated value of block {l}");
            Assert.Equal(kv, k.Length);
        }
    }

    internal static (float[] Key, float[] Value) CacheEntry(BatchDecoder dec, int layer, int slot, int position)
    {
        var kvCache = dec.KvCacheForTests;
        var c = dec.Model.Config;
        var hd = c.HeadDim;
        var key = new float[c.NumKvHeads * hd];
        var value = new float[c.NumKvHeads * hd];
        for (var h = 0; h < c.NumKvHeads; h++)
        {
            var offset = slot * kvCache.SlotStride + ((long)h * kvCache.MaxContext + position) * hd;
            kvCache.Keys[layer].Span.Slice((int)offset, hd).CopyTo(key.AsSpan(h * hd));
            kvCache.Values[layer].Span.Slice((int)offset, hd).CopyTo(value.AsSpan(h * hd));
        }
        return (key, value);
    }

    /// <summary>Without exits, packed steps (the C# whole-cache attention) give what the ordinary path gives.</summary>
    [Theory]
    [MemberData(nameof(Models))]
    public void PackedSteps_WithoutExits_MatchTheOrdinaryPath(string name)
    {
        var dir = Dir(name);
        using var packed = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = 3, MaxContext = 64, PackedSteps = true });
        using var plain = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = 3, MaxContext = 64 });
        int[][] prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10, 11]];
        List<float[]> Run(DecoderModel model)
        {
            using var dec = new BatchDecoder(model);
            var seqs = prompts.Select(p => { var s = dec.TryAllocate()!; dec.Prefill(s, p); return s; }).ToArray();
            var outs = new List<float[]>();
            for (var step = 0; step < 6; step++)
            {
                for (var r = 0; r < seqs.Length; r++) seqs[r].PendingToken = 12 + step + 5 * r;
                outs.Add(dec.Decode().ToArray());
            }
            return outs;
        }
        var a = Run(packed);
        var b = Run(plain);
        for (var i = 0; i < a.Count; i++) ReferenceLogitsTests.AssertClose(b[i].Select(x => (double)x).ToArray(), a[i], 1e-5, $"step {i}");
    }

    /// <summary>An adapter row exits on the adapter's hidden states and propagates K/V with the adapter's projection.</summary>
    [Fact]
    public void AdapterRow_ExitsOnTheAdaptersHiddenStates_MatchesTheMergedReference()
    {
        var dir = Fixtures.TinyLlama;
        using var model = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = 3, MaxContext = 64, PackedSteps = true, AdapterSlots = 2 });
        var c = model.Config;
        var modules = AdapterTests.RandomModules(c, seed: 7, rankBase: 2);
        var reference = new ReferenceModel(dir, AdapterTests.MergedDeltas(c, (modules, 1.0)));
        using var dec = new BatchDecoder(model);
        dec.Adapters!.Write(1, AdapterFactors.FromLora(c, modules));
        var plainRow = dec.TryAllocate()!;
        dec.Prefill(plainRow, [9, 9, 9]);
        var seq = dec.TryAllocate()!;
        dec.SetAdapter(seq, 1);
        dec.SetExitPolicy(seq, new ExitPolicy(new FixedLayer(2), 0.5f));
        var tokens = new List<int> { 3, 141, 59, 26 };
        var exitLayers = Enumerable.Repeat(c.NumLayers, tokens.Count).ToList();
        dec.Prefill(seq, tokens.ToArray());
        var v = c.VocabSize;
        for (var s = 0; s < 4; s++)
        {
            seq.PendingToken = 50 + s;
            plainRow.PendingToken = 60 + s;
            var logits = dec.Decode().ToArray().AsSpan(seq.Slot * v, v).ToArray();
            tokens.Add(50 + s);
            exitLayers.Add(2);
            ReferenceLogitsTests.AssertClose(reference.Forward(tokens, exitLayers).Logits[^1], logits, 1e-4, $"adapter row, step {s}");
        }
    }

    [Fact]
    public void SetExitPolicy_OnAModelWithoutPackedSteps_Throws()
    {
        using var model = DecoderModel.Load(Fixtures.TinyLlama, new RuntimeOptions { MaxBatch = 1, MaxContext = 16 });
        using var dec = new BatchDecoder(model);
        var seq = dec.TryAllocate()!;
        Assert.Throws<InvalidOperationException>(() => dec.SetExitPolicy(seq, new ExitPolicy(CosineCriterion.Instance, 0.9f)));
    }
}

/// <summary>0 B per decode step on the paths this issue added: reward heads (head-only and Otter), packed steps with exits and propagation.</summary>
public sealed class NewPathAllocationTests
{
    [Fact]
    public void Decode_WithRewardHeadsAndOtter_AllocatesNothingPerStep()
    {
        using var model = DecoderModel.Load(Fixtures.TinyLlama, new RuntimeOptions { MaxBatch = 3, MaxContext = 256 });
        var c = model.Config;
        var head = new Serving.Inference.Rewards.RewardHead(Serving.Checkpoints.RewardHeads.RewardHeadReader.ReadFolder(
            Rewards.RewardHeadTests.WriteRandomHead(c, layer: 1, "final_norm", "tanh", "sum", seed: 2), c), model, "h@1");
        using var otter = new Serving.Inference.Rewards.RewardHead(Serving.Checkpoints.RewardHeads.OtterReader.ReadFolder(Rewards.OtterTests.WriteRandomOtter(c, seed: 3), c), model, "o@1");
        using var dec = new BatchDecoder(model);
        var heads = new[] { head, otter, null };
        for (var i = 0; i < 3; i++)
        {
            var seq = dec.TryAllocate()!;
            dec.SetRewardHead(seq, heads[i]);
            seq.PendingToken = ReferenceLogitsTests.ArgMax(dec.Prefill(seq, [1 + i, 2, 3]));
        }
        AllocationProbe.AssertNoAllocation(() => Step(dec), "a decode step with reward heads");
    }

    [Fact]
    public void PackedDecode_WithExitsAtDifferentLayers_AllocatesNothingPerStep()
    {
        using var model = DecoderModel.Load(Fixtures.TinyLlama, new RuntimeOptions { MaxBatch = 4, MaxContext = 256, PackedSteps = true });
        using var dec = new BatchDecoder(model);
        int?[] exits = [1, null, 2, 1];
        for (var i = 0; i < 4; i++)
        {
            var seq = dec.TryAllocate()!;
            if (exits[i] is int e) dec.SetExitPolicy(seq, new ExitPolicy(new FixedLayer(e), 0.5f));
            seq.PendingToken = ReferenceLogitsTests.ArgMax(dec.Prefill(seq, [1 + i, 2, 3]));
        }
        AllocationProbe.AssertNoAllocation(() => Step(dec), "a packed decode step with exits");
    }

    private static void Step(BatchDecoder dec)
    {
        var v = dec.Model.Config.VocabSize;
        var logits = dec.Decode();
        for (var r = 0; r < dec.ActiveCount; r++) dec.Active[r].PendingToken = ReferenceLogitsTests.ArgMax(logits.Slice(r * v, v));
    }
}
