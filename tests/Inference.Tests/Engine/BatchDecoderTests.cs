using Serving.Inference.Engine;
using Serving.Inference.Runtime;
using Xunit;

namespace Serving.Inference.Tests.Engine;

public sealed class BatchDecoderTests
{
    public static TheoryData<string> Models => ["gpt2", "llama"];

    private static string Dir(string name) => name == "gpt2" ? Fixtures.TinyGpt2 : Fixtures.TinyLlama;

    private static readonly int[][] Prompts =
    [
        [1, 2, 3],
        [40, 41, 42, 43, 44, 45, 46, 47, 48],
        [200],
        [7, 9, 11, 13, 15, 17],
    ];

    /// <summary>Greedy tokens and per-step logits of a prompt decoded alone.</summary>
    private static (List<int> Tokens, List<float[]> Logits) Alone(DecoderModel model, int[] prompt, int steps)
    {
        using var dec = new BatchDecoder(model, 1);
        var seq = dec.TryAllocate()!;
        var logits = dec.Prefill(seq, prompt).ToArray();
        var tokens = new List<int>();
        var all = new List<float[]> { logits };
        for (var s = 0; s < steps; s++)
        {
            var next = ReferenceLogitsTests.ArgMax(logits);
            tokens.Add(next);
            seq.PendingToken = next;
            logits = dec.Decode().ToArray();
            all.Add(logits);
        }
        return (tokens, all);
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void Decode_RowsAtDifferentPositionsJoiningOverTime_EachMatchesItsSoloRun(string name)
    {
        using var model = DecoderModel.Load(Dir(name), new RuntimeOptions { MaxBatch = 4, MaxContext = 64 });
        const int steps = 12;
        var solo = Prompts.Select(p => Alone(model, p, steps)).ToArray();

        using var dec = new BatchDecoder(model);
        var v = model.Config.VocabSize;
        var seqs = new Sequence?[Prompts.Length];
        var produced = Prompts.Select(_ => new List<int>()).ToArray();
        var stepOf = new int[Prompts.Length];
        // Row i joins at step 2·i: prefill of newcomers interleaves with the others' decoding.
        for (var step = 0; step < steps + 2 * Prompts.Length; step++)
        {
            for (var i = 0; i < Prompts.Length; i++)
            {
                if (seqs[i] is null && step == 2 * i)
                {
                    seqs[i] = dec.TryAllocate();
                    var first = dec.Prefill(seqs[i]!, Prompts[i]).ToArray();
                    ReferenceLogitsTests.AssertClose(solo[i].Logits[0].Select(x => (double)x).ToArray(), first, 1e-5, $"prefill row {i}");
                    seqs[i]!.PendingToken = ReferenceLogitsTests.ArgMax(first);
                    produced[i].Add(seqs[i]!.PendingToken);
                }
            }
            if (dec.ActiveCount == 0) continue;
            var logits = dec.Decode();
            var rows = dec.Active.ToArray(); // slots change as rows are released below
            for (var r = 0; r < rows.Length; r++)
            {
                var s = rows[r];
                var i = Array.IndexOf(seqs, s);
                var row = logits.Slice(r * v, v);
                stepOf[i]++;
                ReferenceLogitsTests.AssertClose(solo[i].Logits[stepOf[i]].Select(x => (double)x).ToArray(), row, 1e-5, $"row {i} step {stepOf[i]}");
                var next = ReferenceLogitsTests.ArgMax(row);
                if (produced[i].Count < steps)
                {
                    produced[i].Add(next);
                    s.PendingToken = next;
                }
                else
                {
                    dec.Release(s);
                }
            }
        }
        for (var i = 0; i < Prompts.Length; i++)
        {
            Assert.Equal(solo[i].Tokens, produced[i]);
        }
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void Fork_ContinuesIdenticallyToParentUnderGreedy(string name)
    {
        using var model = DecoderModel.Load(Dir(name), new RuntimeOptions { MaxBatch = 3, MaxContext = 64 });
        using var dec = new BatchDecoder(model);
        var v = model.Config.VocabSize;
        var parent = dec.TryAllocate()!;
        var logits = dec.Prefill(parent, Prompts[1]).ToArray();
        parent.PendingToken = ReferenceLogitsTests.ArgMax(logits);
        for (var s = 0; s < 4; s++) parent.PendingToken = ReferenceLogitsTests.ArgMax(dec.Decode());

        var child = dec.TryFork(parent)!;
        Assert.Equal(parent.Length, child.Length);
        for (var s = 0; s < 10; s++)
        {
            var all = dec.Decode();
            var p = all.Slice(parent.Slot * v, v).ToArray();
            var c = all.Slice(child.Slot * v, v).ToArray();
            Assert.Equal(p, c);
            parent.PendingToken = child.PendingToken = ReferenceLogitsTests.ArgMax(p);
        }
    }

    [Fact]
    public void Release_MiddleRow_LastRowMovesAndKeepsDecodingCorrectly()
    {
        using var model = DecoderModel.Load(Fixtures.TinyLlama, new RuntimeOptions { MaxBatch = 3, MaxContext = 64 });
        var solo = Alone(model, Prompts[3], 6);
        using var dec = new BatchDecoder(model);
        var a = dec.TryAllocate()!;
        a.PendingToken = ReferenceLogitsTests.ArgMax(dec.Prefill(a, Prompts[0]));
        var b = dec.TryAllocate()!;
        b.PendingToken = ReferenceLogitsTests.ArgMax(dec.Prefill(b, Prompts[1]));
        var c = dec.TryAllocate()!;
        var first = dec.Prefill(c, Prompts[3]).ToArray();
        c.PendingToken = ReferenceLogitsTests.ArgMax(first);
        var got = new List<int> { c.PendingToken };
        Assert.Null(dec.TryAllocate());

        var v = model.Config.VocabSize;
        for (var s = 0; s < 5; s++)
        {
            if (s == 2) dec.Release(a);
            var logits = dec.Decode();
            foreach (var seq in dec.Active) seq.PendingToken = ReferenceLogitsTests.ArgMax(logits.Slice(seq.Slot * v, v));
            got.Add(c.PendingToken);
        }
        Assert.Equal(0, c.Slot);
        Assert.False(a.IsActive);
        Assert.Equal(solo.Tokens, got);
        Assert.Throws<InvalidOperationException>(() => dec.Release(a));
    }

    [Fact]
    public void Prefill_BeyondContext_ThrowsWithoutChangingTheSequence()
    {
        using var model = DecoderModel.Load(Fixtures.TinyGpt2, new RuntimeOptions { MaxBatch = 1, MaxContext = 8 });
        using var dec = new BatchDecoder(model);
        var seq = dec.TryAllocate()!;
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => dec.Prefill(seq, new int[9]));
        Assert.Contains("context holds 8", e.Message);
        Assert.Equal(0, seq.Length);
        Assert.Throws<ArgumentOutOfRangeException>(() => dec.Prefill(seq, [1, 2, 999_999]));
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void Decode_FusedBlocks_SameLogitsAndKvAsPerLayerUnits(string name)
    {
        using var model = DecoderModel.Load(Dir(name), new RuntimeOptions { MaxBatch = 3, MaxContext = 64, FusedDecode = true });
        Assert.True(model.SupportsFusedDecode);
        using var split = new BatchDecoder(model, 3) { UseFusedDecode = false };
        using var fused = new BatchDecoder(model, 3);
        Assert.True(fused.UseFusedDecode, "a decoder uses the fused blocks when its model has them");
        // Three rows at different positions, the same tokens fed to both decoders.
        var pending = new int[3];
        foreach (var dec in new[] { split, fused })
        {
            for (var r = 0; r < 3; r++)
            {
                var seq = dec.TryAllocate()!;
                pending[r] = ReferenceLogitsTests.ArgMax(dec.Prefill(seq, Prompts[r]));
                seq.PendingToken = pending[r];
            }
        }
        var v = model.Config.VocabSize;
        for (var s = 0; s < 6; s++)
        {
            var expected = split.Decode().ToArray();
            var actual = fused.Decode();
            ReferenceLogitsTests.AssertClose(expected.Select(x => (double)x).ToArray(), actual, 1e-5, $"{name}: fused step {s}");
            for (var r = 0; r < 3; r++)
            {
                var next = ReferenceLogitsTests.ArgMax(expected.AsSpan(r * v, v));
                split.Active[r].PendingToken = next;
                fused.Active[r].PendingToken = next;
            }
        }
        Assert.Equal((0, 6), (split.FusedDecodeSteps, fused.FusedDecodeSteps));
        // The fused graph wrote every layer's K/V where the per-layer units did (the next steps read them).
        for (var l = 0; l < model.Config.NumLayers; l++)
        {
            foreach (var (a, b) in new[] { (split.KvCacheForTests.Keys[l], fused.KvCacheForTests.Keys[l]), (split.KvCacheForTests.Values[l], fused.KvCacheForTests.Values[l]) })
            {
                var diff = System.Numerics.Tensors.TensorPrimitives.Distance(a.Span, b.Span);
                Assert.True(diff < 1e-4, $"{name}: layer {l} cache differs by {diff}");
            }
        }
    }

    [Fact]
    public void FusedDecode_Off_ModelHasNoFusedBlocksAndDecoderRefusesIt()
    {
        using var model = DecoderModel.Load(Fixtures.TinyGpt2, new RuntimeOptions { MaxBatch = 1, MaxContext = 16 });
        Assert.False(model.SupportsFusedDecode);
        using var dec = new BatchDecoder(model);
        Assert.False(dec.UseFusedDecode);
        var e = Assert.Throws<InvalidOperationException>(() => dec.UseFusedDecode = true);
        Assert.Contains("FusedDecode", e.Message);
    }

    [Fact]
    public void Counters_CountEachStepKindItsRowsAndTokens()
    {
        using var model = DecoderModel.Load(Fixtures.TinyLlama, new RuntimeOptions { MaxBatch = 3, MaxContext = 64, PackedSteps = true });
        using var dec = new BatchDecoder(model);
        var start = dec.Counters;
        Assert.Equal(default, start with { DecodeTime = default, MixedStepTime = default, PrefillTime = default });
        var seqs = new Sequence[3];
        for (var r = 0; r < 2; r++)
        {
            seqs[r] = dec.TryAllocate()!;
            seqs[r].PendingToken = ReferenceLogitsTests.ArgMax(dec.Prefill(seqs[r], Prompts[r])); // 3 + 9 tokens
        }
        for (var s = 0; s < 4; s++)
        {
            var logits = dec.Decode();
            for (var r = 0; r < 2; r++) seqs[r].PendingToken = ReferenceLogitsTests.ArgMax(logits.Slice(r * model.Config.VocabSize, model.Config.VocabSize));
        }
        var afterDecode = dec.Counters;
        // A mixed step: both decode rows and a newcomer's 6-token prompt.
        seqs[2] = dec.TryAllocate()!;
        dec.BeginStep();
        dec.AddToStep(seqs[0]);
        dec.AddToStep(seqs[1]);
        dec.AddToStep(seqs[2], Prompts[3]);
        dec.RunStep();
        var d = dec.Counters.Since(start);
        Assert.Equal((4L, 8L, 1L, 8L, 2L, 12L), (d.DecodeSteps, d.DecodeRows, d.MixedSteps, d.MixedStepTokens, d.Prefills, d.PrefillTokens));
        Assert.True(d.DecodeTime > TimeSpan.Zero && d.MixedStepTime > TimeSpan.Zero && d.PrefillTime > TimeSpan.Zero);
        Assert.Equal(afterDecode.DecodeTime, dec.Counters.DecodeTime); // a mixed step's time is its own, not a decode step's
    }

    [Fact]
    public void Decode_SteadyState_AllocatesNothingPerStep()
    {
        using var model = DecoderModel.Load(Fixtures.TinyLlama, new RuntimeOptions { MaxBatch = 4, MaxContext = 128 });
        using var dec = new BatchDecoder(model);
        var v = model.Config.VocabSize;
        for (var i = 0; i < 4; i++)
        {
            var seq = dec.TryAllocate()!;
            seq.PendingToken = ReferenceLogitsTests.ArgMax(dec.Prefill(seq, Prompts[i]));
        }
        void Step()
        {
            var logits = dec.Decode();
            for (var r = 0; r < dec.ActiveCount; r++) dec.Active[r].PendingToken = ReferenceLogitsTests.ArgMax(logits.Slice(r * v, v));
        }
        AllocationProbe.AssertNoAllocation(Step, "a decode step"); // bindings for this batch size are created in the warm-up
    }
}
