using System.Text.Json.Nodes;
using Json.Schema;
using Serving.Fixtures;
using Serving.Inference.Constraints;
using Serving.Inference.Decoding;
using Serving.Inference.Engine;
using Serving.Inference.Runtime;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;
using Serving.Inference.Tests.Decoding;
using Serving.Inference.Tests.Engine;
using Serving.Inference.Tests.Tokenization;
using Serving.Inference.Tokenization;
using Xunit;

namespace Serving.Inference.Tests.Constraints;

/// <summary>
/// Every output generated under a JSON schema parses and validates with an independent validator (JsonSchema.Net,
/// format validation on) — on the demo model (4,096-token byte-level BPE) and on a random GPT-2 fixture with GPT-2's
/// real 50,257-token vocabulary — across the hand-written and generated schemas of <see cref="SchemaCorpus"/>, at
/// temperature 0 and 1; every output also ends by end-of-sequence (finish reason stop), not by running out of tokens.
/// </summary>
public sealed class StructuredOutputTests
{
    private const int GeneratedSchemas = 200;
    private const int MaxTokens = 200;

    private static readonly EvaluationOptions Validation = new() { RequireFormatValidation = true, OutputFormat = OutputFormat.Flag };

    [Fact]
    public void JsonSchemaOutputs_OnTheDemoModel_AllValidate()
    {
        using var model = DecoderModel.Load(DemoModelReferenceTests.DemoDirectory, new RuntimeOptions { MaxBatch = 16, MaxContext = 256 });
        var tokenizer = TokenizerLoader.Load(DemoModelReferenceTests.DemoDirectory, model.Config.VocabSize);
        RunCorpus(model, tokenizer, tokenizer.Encode("Answer in JSON:"));
    }

    [Fact]
    public void JsonSchemaOutputs_OnAGpt2VocabularyFixture_AllValidate()
    {
        var dir = Gpt2VocabularyFixture();
        using var model = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = 16, MaxContext = 256 });
        var tokenizer = TokenizerLoader.Load(dir, model.Config.VocabSize);
        Assert.Equal(50257, TokenVocabulary.For(tokenizer, model.Config.VocabSize, [50256]).VocabSize);
        RunCorpus(model, tokenizer, tokenizer.Encode("Answer in JSON:"));
    }

    [Fact]
    public void AlignmentMethodsAndChoices_UnderASchema_EveryCandidateValidates()
    {
        // best-of-n (forked candidates, the best by reward), ARGS (top-k re-ranked by reward, forked rows) and n = 3:
        // the constraint forks with every row, so every answer validates.
        using var model = DecoderModel.Load(DemoModelReferenceTests.DemoDirectory, new RuntimeOptions { MaxBatch = 16, MaxContext = 256 });
        var tokenizer = TokenizerLoader.Load(DemoModelReferenceTests.DemoDirectory, model.Config.VocabSize);
        var head = Rewards.RewardHeadTests.DemoHead(model);
        const string schema = """{"type":"object","properties":{"fortune":{"type":"string","maxLength":24},"luck":{"type":"integer","minimum":1,"maximum":9},"tags":{"type":"array","items":{"enum":["love","money"]},"maxItems":2}},"required":["fortune","luck"]}""";
        var grammar = Grammar.FromJsonSchema(schema);
        using var harness = new SchedulerHarness(model, tokenizer, rows: 16);
        var specs = new (DecodingSpec Spec, int Choices)[] { (new BestOfNSpec(4, ReturnAll: true), 1), (new ArgsSpec(5, 1.5f), 1), (SamplingSpec.Instance, 3) };
        var checkedOutputs = 0;
        foreach (var (spec, choices) in specs)
        {
            foreach (var seed in new ulong[] { 1, 2, 3 })
            {
                var result = harness.Run(new GenerationRequest
                {
                    PromptTokens = tokenizer.Encode("Tell me a fortune:"),
                    Sampling = new SamplingParameters { Temperature = 0.9f, Seed = seed, MaxTokens = 120 },
                    Choices = choices,
                    RewardHead = head,
                    Decoding = ConstrainedSpec.Wrap(spec, grammar),
                });
                for (var c = 0; c < result.Choices; c++)
                {
                    var text = result.Text(c);
                    Assert.Equal(FinishReason.Stop, result.Finish(c).FinishReason);
                    var evaluation = JsonSchema.FromText(schema).Evaluate(JsonNode.Parse(text), Validation);
                    Assert.True(evaluation.IsValid, $"{spec.Method} seed {seed} choice {c}: {text}");
                    checkedOutputs++;
                }
            }
        }
        Assert.True(checkedOutputs >= 15, $"checked {checkedOutputs} outputs");
    }

    private static readonly Lock FixtureGate = new();
    private static string? _gpt2Dir;

    /// <summary>A tiny random GPT-2 (2 layers, d 32) with GPT-2's real vocabulary files.</summary>
    internal static string Gpt2VocabularyFixture()
    {
        lock (FixtureGate)
        {
            if (_gpt2Dir is not null) return _gpt2Dir;
            var dir = Fixtures.Checkpoint("tiny-gpt2-vocab", FixtureShape.TinyGpt2 with { Vocab = 50257, MaxPositions = 256 });
            using var reference = new Gpt2Reference();
            File.Copy(Path.Combine(reference.Gpt2Files.Path, "vocab.json"), Path.Combine(dir, "vocab.json"), overwrite: true);
            File.Copy(Path.Combine(reference.Gpt2Files.Path, "merges.txt"), Path.Combine(dir, "merges.txt"), overwrite: true);
            return _gpt2Dir = dir;
        }
    }

    private static void RunCorpus(DecoderModel model, ITokenizer tokenizer, int[] prompt)
    {
        var schemas = SchemaCorpus.All(GeneratedSchemas);
        Assert.True(schemas.Count >= 200);
        var failures = new List<string>();
        var checkedOutputs = 0;
        using var harness = new SchedulerHarness(model, tokenizer, rows: 16);
        foreach (var temperature in new[] { 0f, 1f })
        {
            for (var start = 0; start < schemas.Count; start += 48)
            {
                var batch = schemas.Skip(start).Take(48).ToList();
                var requests = batch.Select((s, i) => new GenerationRequest
                {
                    PromptTokens = prompt,
                    Sampling = new SamplingParameters { Temperature = temperature, Seed = (ulong)(start + i), MaxTokens = MaxTokens },
                    Decoding = ConstrainedSpec.Wrap(SamplingSpec.Instance, Grammar.FromJsonSchema(s)),
                }).ToList();
                var results = harness.RunAll(requests);
                for (var i = 0; i < batch.Count; i++)
                {
                    var text = results[i].Text();
                    var finish = results[i].Finish().FinishReason;
                    checkedOutputs++;
                    if (finish != FinishReason.Stop) { failures.Add($"T={temperature} finish {finish}: {batch[i]} → {text}"); continue; }
                    JsonNode? node;
                    try
                    {
                        node = JsonNode.Parse(text);
                    }
                    catch (System.Text.Json.JsonException e)
                    {
                        failures.Add($"T={temperature} does not parse ({e.Message}): {batch[i]} → {text}");
                        continue;
                    }
                    var result = JsonSchema.FromText(batch[i]).Evaluate(node, Validation);
                    if (!result.IsValid) failures.Add($"T={temperature} invalid: {batch[i]} → {text}");
                }
            }
        }
        Assert.True(failures.Count == 0, $"{failures.Count} of {checkedOutputs} outputs failed:\n" + string.Join("\n", failures.Take(8)));
    }
}
