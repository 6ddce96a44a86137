using System.Text;
using Serving.Checkpoints;
using Serving.Inference.Engine;
using Serving.Inference.Runtime;
using Serving.Inference.Tokenization;
using Xunit;

namespace Serving.Inference.Tests.Engine;

/// <summary>
/// The committed demo model (tools/forge) against the PyTorch reference dumps written by the forge: logits at every
/// prompt position, greedy decode steps through the KV cache, every layer's hidden state, and the tokenizer's ids.
/// PyTorch is not needed here: the dumps are committed next to the model.
/// </summary>
public sealed class DemoModelReferenceTests
{
    internal static string DemoDirectory
    {
        get
        {
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Serving.sln"))) dir = dir.Parent;
            return Path.Combine(dir?.FullName ?? throw new InvalidOperationException("repository root not found"), "models", "demo");
        }
    }

    private static SafetensorsFile Reference() =>
        SafetensorsFile.Open(Path.Combine(DemoDirectory, "reference", "reference.safetensors"));

    private static IEnumerable<string> Prompts(SafetensorsFile r) =>
        r.Tensors.Keys.Where(k => k.EndsWith(".input_ids", StringComparison.Ordinal)).Select(k => k[..^".input_ids".Length]).Order();

    [Fact]
    public void Prefill_LogitsAndHiddenStates_MatchPyTorch()
    {
        using var r = Reference();
        using var model = DecoderModel.Load(DemoDirectory, new RuntimeOptions { MaxBatch = 1, MaxContext = 256 });
        var c = model.Config;
        var prompts = Prompts(r).ToList();
        Assert.NotEmpty(prompts);
        foreach (var p in prompts)
        {
            var ids = r.ReadInt64(p + ".input_ids").Select(x => (int)x).ToArray();
            var t = ids.Length;
            using var dec = new BatchDecoder(model, 1);
            var seq = dec.TryAllocate()!;
            var hidden = new float[(c.NumLayers + 1) * t * c.HiddenSize];
            var logits = new float[t * c.VocabSize];
            dec.Prefill(seq, ids, hidden, logits);
            ReferenceLogitsTests.AssertClose(r.ReadFloat32(p + ".logits").Select(x => (double)x).ToArray(), logits, 1e-4, $"{p} prefill logits");
            ReferenceLogitsTests.AssertClose(r.ReadFloat32(p + ".hidden").Select(x => (double)x).ToArray(), hidden, 1e-4, $"{p} hidden states");
        }
    }

    [Fact]
    public void GreedyDecode_TokensAndLogits_MatchPyTorch()
    {
        using var r = Reference();
        using var model = DecoderModel.Load(DemoDirectory, new RuntimeOptions { MaxBatch = 1, MaxContext = 256 });
        var v = model.Config.VocabSize;
        foreach (var p in Prompts(r))
        {
            var ids = r.ReadInt64(p + ".input_ids").Select(x => (int)x).ToArray();
            var expectedIds = r.ReadInt64(p + ".decode_ids").Select(x => (int)x).ToArray();
            var expectedLogits = r.ReadFloat32(p + ".decode_logits");
            using var dec = new BatchDecoder(model, 1);
            var seq = dec.TryAllocate()!;
            var logits = dec.Prefill(seq, ids).ToArray();
            // decode_ids[0] continues the prompt; decode_logits[s] are the logits after feeding decode_ids[s].
            Assert.Equal(expectedIds[0], ReferenceLogitsTests.ArgMax(logits));
            for (var s = 0; s < expectedIds.Length; s++)
            {
                seq.PendingToken = expectedIds[s];
                logits = dec.Decode().ToArray();
                ReferenceLogitsTests.AssertClose(expectedLogits.AsSpan(s * v, v).ToArray().Select(x => (double)x).ToArray(), logits, 1e-4, $"{p} decode step {s}");
                if (s + 1 < expectedIds.Length) Assert.Equal(expectedIds[s + 1], ReferenceLogitsTests.ArgMax(logits));
            }
        }
    }

    [Fact]
    public void Tokenizer_EncodesReferenceTextsToTheForgesIds()
    {
        using var r = Reference();
        var tokenizer = TokenizerLoader.Load(DemoDirectory, 0);
        var cases = r.Tensors.Keys.Where(k => k.EndsWith(".text_utf8", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(cases);
        foreach (var key in cases)
        {
            var name = key[..^".text_utf8".Length];
            var text = Encoding.UTF8.GetString(r.GetBytes(key));
            var expected = r.ReadInt64(name + ".ids").Select(x => (int)x).ToArray();
            Assert.Equal(expected, tokenizer.Encode(text));
            Assert.Equal(text, tokenizer.Decode(expected));
        }
    }
}
