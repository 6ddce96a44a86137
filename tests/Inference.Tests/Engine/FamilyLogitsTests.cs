using Serving.Fixtures;
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

    private static void RunAndCompare(string name, bool packed)
    {
        var dir = Dir(name);
        using var model = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = 2, MaxContext = 128, PackedSteps = packed });
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
                ReferenceLogitsTests.AssertClose(expected[t], all.AsSpan(t * v, v), Tolerance, $"{name}: prompt of {length}, position {t}");
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
                ReferenceLogitsTests.AssertClose(expected[^1], row, Tolerance, $"{name}: row {r} at position {rows[r].Count - 1} (decode step {step})");
                var next = ReferenceLogitsTests.ArgMax(row);
                dec.Active[r].PendingToken = next;
                rows[r].Add(next);
            }
        }
    }
}
