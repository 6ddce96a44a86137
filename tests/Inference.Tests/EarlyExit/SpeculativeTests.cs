using System.Text.Json.Nodes;
using Serving.Inference.Adapters;
using Serving.Inference.Chat;
using Serving.Inference.Decoding;
using Serving.Inference.EarlyExit;
using Serving.Inference.Engine;
using Serving.Inference.Runtime;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;
using Serving.Inference.Tests.Decoding;
using Serving.Inference.Tests.Engine;
using Serving.Inference.Tokenization;
using Xunit;

namespace Serving.Inference.Tests.EarlyExit;

/// <summary>
/// Self-speculative decoding on the demo model: drafts with the first layers, verification by the rest, output token
/// for token what plain decoding gives (greedy and seeded sampling, with and without an adapter); confident early exit
/// through the scheduler.
/// </summary>
public sealed class SpeculativeTests : IDisposable
{
    private readonly DecoderModel _model = DecoderModel.Load(DemoModelReferenceTests.DemoDirectory,
        new RuntimeOptions { MaxBatch = 8, MaxContext = 256, PackedSteps = true, AdapterSlots = 1 });
    private readonly ITokenizer _tokenizer;
    private readonly List<int[]> _prompts;

    public SpeculativeTests()
    {
        var demo = DemoModelReferenceTests.DemoDirectory;
        _tokenizer = TokenizerLoader.Load(demo, _model.Config.VocabSize);
        var template = ChatTemplate.FromCheckpoint(demo, out _);
        _prompts = File.ReadLines(Path.Combine(demo, "eval", "prompts.test.jsonl")).Take(50)
            .Select(l => JsonNode.Parse(l)!["messages"]![0]!["content"]!.GetValue<string>())
            .Select(u => _tokenizer.Encode(template.Render([new ChatMessage("user", u)], true, "<|endoftext|>", "<|endoftext|>")))
            .ToList();
    }

    public void Dispose() => _model.Dispose();

    private static GenerationRequest Request(int[] prompt, float temperature, DecodingSpec spec, ExitPolicy? exit = null, AdapterRef? adapter = null) => new()
    {
        PromptTokens = prompt,
        Sampling = new SamplingParameters { Temperature = temperature, TopK = temperature > 0 ? 40 : 0, Seed = 17, MaxTokens = 24 },
        Logprobs = true, // an event for every token
        Decoding = spec,
        EarlyExit = exit,
        Adapter = adapter,
    };

    [Fact]
    public void Speculative_Greedy_EqualsPlainGreedy_TokenForToken_On50Prompts()
    {
        using var h = new SchedulerHarness(_model, _tokenizer, rows: 8);
        double accepted = 0;
        foreach (var prompt in _prompts)
        {
            var plain = h.Run(Request(prompt, 0f, SamplingSpec.Instance));
            var spec = h.Run(Request(prompt, 0f, new SpeculativeSpec(DraftLayers: 3, DraftTokens: 4)));
            Assert.Equal(plain.Tokens(), spec.Tokens());
            Assert.Equal(plain.Text(), spec.Text());
            Assert.Equal(plain.Finish().FinishReason, spec.Finish().FinishReason);
            accepted += spec.Handle.DraftAcceptance ?? 0;
        }
        Assert.True(accepted / _prompts.Count > 0.2, $"mean draft acceptance {accepted / _prompts.Count:F2}: drafting with 3 of 6 layers should agree often on this anytime-trained model");
        Assert.Equal(0, h.Decoder.ActiveCount);
    }

    [Fact]
    public void Speculative_SeededSampling_AndAnAdapter_EqualPlainDecoding()
    {
        var c = _model.Config;
        var adapter = new AdapterRef("t/a@1", AdapterFactors.FromLora(c, AdapterTests.RandomModules(c, seed: 3, rankBase: 4)));
        using var h = new SchedulerHarness(_model, _tokenizer, rows: 8);
        foreach (var prompt in _prompts.Take(12))
        {
            foreach (var (temperature, a) in new[] { (0.8f, (AdapterRef?)null), (0f, adapter), (0.8f, adapter) })
            {
                var plain = h.Run(Request(prompt, temperature, SamplingSpec.Instance, adapter: a));
                var spec = h.Run(Request(prompt, temperature, new SpeculativeSpec(2, 5), adapter: a));
                Assert.Equal(plain.Tokens(), spec.Tokens());
            }
        }
    }

    /// <summary>Confident exits through the scheduler: rows leave early (fewer layers per token), outputs stay mostly the model's.</summary>
    [Fact]
    public void Confident_ProbeExit_ThroughTheScheduler_RunsFewerLayers()
    {
        var probe = new ProbeCriterion(Serving.Checkpoints.ExitProbes.ExitProbeReader.ReadFolder(Path.Combine(DemoModelReferenceTests.DemoDirectory, "exit-probe"), _model.Config), _model);
        using var h = new SchedulerHarness(_model, _tokenizer, rows: 8);
        var results = h.RunAll(_prompts.Take(8).Select(p => Request(p, 0f, SamplingSpec.Instance, new ExitPolicy(probe, 0.6f))).ToList());
        Assert.All(results, r => Assert.True(r.Handle.LayersPerToken < _model.Config.NumLayers, $"layers per token {r.Handle.LayersPerToken}"));
        Assert.All(results, r => Assert.NotEmpty(r.Tokens()));
    }
}
