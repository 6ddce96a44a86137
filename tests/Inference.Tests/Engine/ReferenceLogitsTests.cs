using Serving.Fixtures;
using Serving.Inference.Engine;
using Serving.Inference.Runtime;
using Serving.Inference.Tests.Reference;
using Xunit;

namespace Serving.Inference.Tests.Engine;

public sealed class ReferenceLogitsTests
{
    public static TheoryData<string> Models => ["gpt2", "llama", "qwen2", "llama-bias"];

    private static string Dir(string name) => name switch
    {
        "gpt2" => Fixtures.TinyGpt2,
        "llama" => Fixtures.TinyLlama,
        // Llama with attention_bias: q/k/v and o_proj biased (the o bias rides in SkipSimplifiedLayerNormalization).
        "llama-bias" => Fixtures.Checkpoint("tiny-llama-bias", FixtureShape.TinyLlama with { AttentionBias = true, Family = "llama" }),
        _ => Fixtures.Checkpoint("tiny-qwen2", FixtureShape.TinyLlama with { AttentionBias = true, TieEmbeddings = true }),
    };

    [Theory]
    [MemberData(nameof(Models))]
    public void Prefill_AllPositionsAndHiddenStates_MatchFloat64Reference(string name)
    {
        var dir = Dir(name);
        using var model = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = 2, MaxContext = 64 });
        using var dec = new BatchDecoder(model);
        var c = model.Config;
        int[] prompt = [5, 17, 42, 99, 3, 250, 7, 8, 120, 64, 1];
        var hidden = new float[(c.NumLayers + 1) * prompt.Length * c.HiddenSize];
        var logits = new float[prompt.Length * c.VocabSize];
        var seq = dec.TryAllocate()!;
        var last = dec.Prefill(seq, prompt, hidden, logits).ToArray();

        var (refLogits, refHidden) = new ReferenceModel(dir).Forward(prompt);
        for (var t = 0; t < prompt.Length; t++)
        {
            AssertClose(refLogits[t], logits.AsSpan(t * c.VocabSize, c.VocabSize), 1e-4, $"logits at position {t}");
        }
        AssertClose(refLogits[^1], last, 1e-4, "last-position logits");
        for (var l = 0; l <= c.NumLayers; l++)
        {
            var size = prompt.Length * c.HiddenSize;
            AssertClose(refHidden[l], hidden.AsSpan(l * size, size), 1e-4, $"hidden state after layer {l}");
        }
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void Decode_32StepsThroughKvCache_MatchesFloat64Reference(string name)
    {
        var dir = Dir(name);
        using var model = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = 2, MaxContext = 64 });
        using var dec = new BatchDecoder(model);
        var reference = new ReferenceModel(dir);
        var tokens = new List<int> { 11, 22, 33, 44, 55 };
        var seq = dec.TryAllocate()!;
        var logits = dec.Prefill(seq, tokens.ToArray()).ToArray();
        for (var step = 0; step < 32; step++)
        {
            var next = ArgMax(logits);
            tokens.Add(next);
            seq.PendingToken = next;
            logits = dec.Decode().ToArray();
            var (refLogits, _) = reference.Forward(tokens);
            AssertClose(refLogits[^1], logits, 1e-4, $"decode step {step}");
        }
    }

    internal static int ArgMax(ReadOnlySpan<float> x)
    {
        var best = 0;
        for (var i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }

    internal static void AssertClose(double[] expected, ReadOnlySpan<float> actual, double tolerance, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        double worst = 0;
        var at = -1;
        for (var i = 0; i < expected.Length; i++)
        {
            var diff = Math.Abs(expected[i] - actual[i]);
            if (diff > worst) { worst = diff; at = i; }
        }
        Assert.True(worst <= tolerance, $"{what}: max abs diff {worst:E3} at {at} (expected {expected[Math.Max(at, 0)]}, got {actual[Math.Max(at, 0)]})");
    }
}
