using Serving.Checkpoints;
using Serving.Inference.Adapters;
using Serving.Inference.Engine;
using Serving.Inference.Runtime;
using Serving.Inference.Tests.Reference;
using Xunit;

namespace Serving.Inference.Tests.Engine;

/// <summary>
/// Mixed steps (decode rows and prompt chunks in one pass) against the float64 reference model, against each row run
/// alone, and against a whole-prompt prefill.
/// </summary>
public sealed class MixedStepTests
{
    public static TheoryData<string> Models => ["gpt2", "llama"];

    private static string Dir(string name) => name == "gpt2" ? Fixtures.TinyGpt2 : Fixtures.TinyLlama;

    private static DecoderModel Load(string dir, int batch, int adapterSlots = 0) => DecoderModel.Load(dir, new RuntimeOptions
    {
        MaxBatch = batch, MaxContext = 64, PackedSteps = true, AdapterSlots = adapterSlots,
        AdapterKernel = AdapterKernelKind.Segmented,
    });

    /// <summary>One step of a schedule: per row, a prompt chunk (its length) or a decode (0), or nothing (-1).</summary>
    private static readonly int[][] Schedule =
    [
        [3, -1, 4, -1],
        [2, 3, 5, -1],
        [0, 0, 0, 2],
        [0, 0, 0, 0],
        [0, -1, 0, 0],
        [0, 0, 0, 0],
    ];

    private static readonly int[][] Prompts = [[3, 141, 59, 26, 5], [7, 8, 9], [20, 21, 22, 23, 24, 25, 26, 27, 28], [31, 32]];

    /// <summary>Adapter slot per row: two adapters of different ranks, one row on the base model.</summary>
    private static readonly int[] Slots = [0, -1, 1, 0];

    /// <summary>
    /// Runs <see cref="Schedule"/> for <paramref name="rows"/> (the others left out), greedy decode tokens from each
    /// row's own logits; returns per row the logits each of its entries got and the tokens it fed.
    /// </summary>
    private static (List<float[]> Logits, List<List<int>> Fed)[] Run(DecoderModel model, int[] rows, AdapterFactors x, AdapterFactors y)
    {
        using var dec = new BatchDecoder(model, rows.Length);
        dec.Adapters!.Write(0, x);
        dec.Adapters.Write(1, y);
        var seqs = new Sequence[rows.Length];
        var offset = new int[rows.Length];
        var result = rows.Select(_ => (Logits: new List<float[]>(), Fed: new List<List<int>>())).ToArray();
        var entryOf = new int[rows.Length];
        var v = model.Config.VocabSize;
        foreach (var step in Schedule)
        {
            dec.BeginStep();
            for (var i = 0; i < rows.Length; i++)
            {
                var r = rows[i];
                entryOf[i] = -1;
                if (step[r] < 0) continue;
                if (seqs[i] is null)
                {
                    seqs[i] = dec.TryAllocate()!;
                    if (Slots[r] >= 0) dec.SetAdapter(seqs[i], Slots[r]);
                }
                if (step[r] == 0)
                {
                    result[i].Fed.Add([seqs[i].PendingToken]);
                    entryOf[i] = dec.AddToStep(seqs[i]);
                }
                else
                {
                    var chunk = Prompts[r].AsSpan(offset[i], step[r]);
                    result[i].Fed.Add([.. chunk]);
                    entryOf[i] = dec.AddToStep(seqs[i], chunk);
                    offset[i] += step[r];
                }
            }
            var logits = dec.RunStep().ToArray();
            for (var i = 0; i < rows.Length; i++)
            {
                if (entryOf[i] < 0) continue;
                var mine = logits.AsSpan(entryOf[i] * v, v).ToArray();
                result[i].Logits.Add(mine);
                seqs[i].PendingToken = ReferenceLogitsTests.ArgMax(mine);
            }
        }
        return result;
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void MixedStep_DecodeRowsAndPromptChunksWithAdaptersOfDifferentRanks_EachRowMatchesTheReferenceAndItsSoloRun(string name)
    {
        var dir = Dir(name);
        using var model = Load(dir, batch: 4, adapterSlots: 2);
        var c = model.Config;
        var mx = AdapterTests.RandomModules(c, seed: 11, rankBase: 2);
        var my = AdapterTests.RandomModules(c, seed: 12, rankBase: 6);
        var x = AdapterFactors.FromLora(c, mx);
        var y = AdapterFactors.FromLora(c, my);
        var references = new[] { new ReferenceModel(dir, AdapterTests.MergedDeltas(c, (mx, 1.0))), new ReferenceModel(dir), new ReferenceModel(dir, AdapterTests.MergedDeltas(c, (my, 1.0))) };
        ReferenceModel ReferenceOf(int row) => Slots[row] switch { 0 => references[0], 1 => references[2], _ => references[1] };

        var batch = Run(model, [0, 1, 2, 3], x, y);
        for (var r = 0; r < 4; r++)
        {
            var tokens = new List<int>();
            for (var e = 0; e < batch[r].Logits.Count; e++)
            {
                tokens.AddRange(batch[r].Fed[e]);
                ReferenceLogitsTests.AssertClose(ReferenceOf(r).Forward(tokens).Logits[^1], batch[r].Logits[e], 1e-4, $"row {r} entry {e}");
            }
            var solo = Run(model, [r], x, y)[0];
            Assert.Equal(batch[r].Fed, solo.Fed);
            for (var e = 0; e < solo.Logits.Count; e++)
            {
                ReferenceLogitsTests.AssertClose(solo.Logits[e].Select(f => (double)f).ToArray(), batch[r].Logits[e], 1e-5, $"row {r} solo vs batch, entry {e}");
            }
        }
    }

    /// <summary>
    /// A prompt fed in chunks split anywhere (each chunk in a step beside another row's decode token) ends with the
    /// logits of a whole-prompt prefill, and greedy decoding goes on identically.
    /// </summary>
    [Theory]
    [MemberData(nameof(Models))]
    public void ChunkBoundaries_AnywhereInAPrompt_GiveTheWholePromptPrefillsResult(string name)
    {
        using var model = Load(Dir(name), batch: 2);
        int[] prompt = [5, 17, 29, 3, 101, 7, 64, 12, 9, 88, 41, 2];
        const int decodeSteps = 4;

        (float[] Last, List<int> Greedy) Whole()
        {
            using var dec = new BatchDecoder(model, 1);
            var seq = dec.TryAllocate()!;
            var logits = dec.Prefill(seq, prompt).ToArray();
            return (logits, Greedy(dec, seq, logits));
        }

        (float[] Last, List<int> Greedy) Chunked(int[] chunks)
        {
            using var dec = new BatchDecoder(model, 2);
            var other = dec.TryAllocate()!;
            dec.Prefill(other, [40, 41]);
            other.PendingToken = 42;
            var seq = dec.TryAllocate()!;
            float[] last = [];
            var at = 0;
            foreach (var chunk in chunks)
            {
                dec.BeginStep();
                dec.AddToStep(other);
                var entry = dec.AddToStep(seq, prompt.AsSpan(at, chunk));
                var v = model.Config.VocabSize;
                var logits = dec.RunStep();
                last = logits.Slice(entry * v, v).ToArray();
                other.PendingToken = ReferenceLogitsTests.ArgMax(logits[..v]);
                at += chunk;
            }
            Assert.Equal(prompt.Length, at);
            dec.Release(other);
            return (last, Greedy(dec, seq, last));
        }

        List<int> Greedy(BatchDecoder dec, Sequence seq, float[] logits)
        {
            var tokens = new List<int>();
            for (var s = 0; s < decodeSteps; s++)
            {
                seq.PendingToken = ReferenceLogitsTests.ArgMax(logits);
                tokens.Add(seq.PendingToken);
                logits = dec.Decode().ToArray();
            }
            return tokens;
        }

        var whole = Whole();
        int[][] chunkings = [[12], [1, 11], [5, 7], [3, 3, 3, 3], [11, 1], [2, 1, 4, 1, 4], [.. Enumerable.Repeat(1, 12)]];
        foreach (var chunks in chunkings)
        {
            var chunked = Chunked(chunks);
            ReferenceLogitsTests.AssertClose(whole.Last.Select(f => (double)f).ToArray(), chunked.Last, 1e-5, $"chunks [{string.Join(",", chunks)}]");
            Assert.Equal(whole.Greedy, chunked.Greedy);
        }
    }

    /// <summary>Once a step's token count was seen, a mixed step (decode rows, a prompt chunk, adapters) allocates nothing.</summary>
    [Fact]
    public void MixedStep_Repeated_AllocatesNothing()
    {
        using var model = Load(Fixtures.TinyLlama, batch: 3, adapterSlots: 1);
        var c = model.Config;
        using var dec = new BatchDecoder(model, 3);
        dec.Adapters!.Write(0, AdapterFactors.FromLora(c, AdapterTests.RandomModules(c, seed: 3, rankBase: 2)));
        var a = dec.TryAllocate()!;
        var b = dec.TryAllocate()!;
        var p = dec.TryAllocate()!;
        dec.SetAdapter(a, 0);
        dec.SetAdapter(p, 0);
        dec.Prefill(a, [1, 2, 3]);
        dec.Prefill(b, [4, 5]);
        int[] chunk = [6, 7, 8, 9, 10];
        void Step()
        {
            a.PendingToken = 11;
            b.PendingToken = 12;
            dec.BeginStep();
            dec.AddToStep(a);
            dec.AddToStep(b);
            dec.AddToStep(p, chunk);
            dec.RunStep();
            // Keep the lengths bounded: forget what this step cached.
            dec.Truncate(a, 3);
            dec.Truncate(b, 2);
            dec.Truncate(p, 0);
        }
        AllocationProbe.AssertNoAllocation(Step, "a mixed step");
    }

    [Fact]
    public void MixedStep_BadEntries_AreRefusedWithAClearError()
    {
        using var model = Load(Fixtures.TinyGpt2, batch: 2);
        using var dec = new BatchDecoder(model, 2);
        var seq = dec.TryAllocate()!;
        Assert.Throws<InvalidOperationException>(() => dec.AddToStep(seq, [1]));      // no BeginStep
        dec.BeginStep();
        Assert.Throws<InvalidOperationException>(() => dec.AddToStep(seq));           // no pending token
        Assert.Throws<ArgumentException>(() => dec.AddToStep(seq, []));
        Assert.Throws<ArgumentOutOfRangeException>(() => dec.AddToStep(seq, new int[65])); // past the context
        dec.AddToStep(seq, [1, 2]);
        var twice = Assert.Throws<InvalidOperationException>(() => dec.AddToStep(seq, [3]));
        Assert.Contains("already in this step", twice.Message);
        Assert.Equal(1, dec.RunStep().Length / model.Config.VocabSize);
        Assert.Equal(2, seq.Length);

        using var plain = DecoderModel.Load(Fixtures.TinyGpt2, new RuntimeOptions { MaxBatch = 1, MaxContext = 16 });
        using var classic = new BatchDecoder(plain, 1);
        Assert.False(classic.SupportsMixedSteps);
        Assert.Throws<InvalidOperationException>(classic.BeginStep);
    }
}
