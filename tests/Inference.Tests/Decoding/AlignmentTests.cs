using Serving.Checkpoints.RewardHeads;
using Serving.Inference.Decoding;
using Serving.Inference.Engine;
using Serving.Inference.Rewards;
using Serving.Inference.Runtime;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;
using Serving.Inference.Tests.Engine;
using Serving.Inference.Tests.Rewards;
using Serving.Inference.Tokenization;
using Xunit;

namespace Serving.Inference.Tests.Decoding;

/// <summary>
/// The mechanics of the alignment strategies on the demo model and its reward head (and a fixture with a deeper head
/// for ARGS's forked-candidate mode), each against plain sampling or an independent re-computation.
/// </summary>
public sealed class AlignmentTests : IDisposable
{
    private readonly DecoderModel _model = DecoderModel.Load(DemoModelReferenceTests.DemoDirectory, new RuntimeOptions { MaxBatch = 16, MaxContext = 128 });
    private readonly ITokenizer _tokenizer;
    private readonly RewardHead _head;

    public AlignmentTests()
    {
        _tokenizer = TokenizerLoader.Load(DemoModelReferenceTests.DemoDirectory, _model.Config.VocabSize);
        _head = RewardHeadTests.DemoHead(_model);
    }

    public void Dispose() => _model.Dispose();

    private static readonly int[][] Prompts =
    [
        [0, 1, 464, 7, 3, 2],
        [0, 262, 454, 502, 329],
        [0, 1, 448, 454, 502, 329, 3, 2],
        [0, 424, 351, 262],
    ];

    private int[] Prompt(string userMessage) => [0, 1, .. _tokenizer.Encode(userMessage), 3, 2];

    private GenerationRequest Request(int[] prompt, float temperature, ulong seed, int maxTokens = 16, DecodingSpec? decoding = null, RewardHead? head = null, int choices = 1) => new()
    {
        PromptTokens = prompt,
        Sampling = new SamplingParameters { Temperature = temperature, Seed = seed, MaxTokens = maxTokens },
        Choices = choices,
        RewardHead = head ?? _head,
        Decoding = decoding ?? SamplingSpec.Instance,
    };

    [Fact]
    public void BestOfN_ReturnsTheMaxRewardSample_OfThePlainSamplesWithTheSameSeeds()
    {
        using var h = new SchedulerHarness(_model, _tokenizer);
        var prompt = Prompt("Tell me a fortune.");
        var plain = h.Run(Request(prompt, 0.9f, seed: 11, choices: 4));
        var rewards = Enumerable.Range(0, 4).Select(c => plain.Finish(c).Reward!.Value).ToArray();
        Assert.True(rewards.Distinct().Count() > 1, "the samples should differ in reward");
        var best = Array.IndexOf(rewards, rewards.Max());

        var bon = h.Run(Request(prompt, 0.9f, seed: 11, decoding: new BestOfNSpec(4)));
        Assert.Equal(1, bon.Choices);
        Assert.Equal(plain.Tokens(best), bon.Tokens());
        Assert.Equal(plain.Text(best), bon.Text());
        Assert.Equal(rewards[best], bon.Finish().Reward);
        Assert.Equal(rewards, bon.Handle.Alignment!.CandidateRewards);
        Assert.Equal(best, bon.Handle.Alignment.Chosen);
        Assert.Equal(plain.Tokens(best).Count + (plain.Finish(best).FinishReason == FinishReason.Stop ? 1 : 0), bon.Handle.CompletionTokens);
        Assert.Equal(plain.Handle.GeneratedTokens, bon.Handle.GeneratedTokens);

        var all = h.Run(Request(prompt, 0.9f, seed: 11, decoding: new BestOfNSpec(4, ReturnAll: true)));
        Assert.Equal(4, all.Choices);
        for (var c = 0; c < 4; c++)
        {
            Assert.Equal(plain.Tokens(c), all.Tokens(c));
            Assert.Equal(rewards[c], all.Finish(c).Reward);
        }
    }

    [Fact]
    public void Args_WeightZero_EqualsGreedy_TokenForToken()
    {
        using var h = new SchedulerHarness(_model, _tokenizer);
        foreach (var prompt in Prompts)
        {
            var greedy = h.Run(Request(prompt, 0f, seed: 1, maxTokens: 24));
            var args = h.Run(Request(prompt, 0f, seed: 1, maxTokens: 24, decoding: new ArgsSpec(10, 0f)));
            Assert.NotEmpty(greedy.Tokens());
            Assert.Equal(greedy.Tokens(), args.Tokens());
            Assert.Equal(greedy.Finish().Reward, args.Finish().Reward);
        }
    }

    /// <summary>
    /// ARGS with the paper's weight, re-computed independently at every step: a fresh decoder prefills the chosen prefix
    /// to get the logits, and prefix ⊕ v for each of the top-10 tokens to get v's reward; the best score must be the
    /// token ARGS chose.
    /// </summary>
    [Fact]
    public void Args_ChoicesEqualAnIndependentScoring_AndTheWeightChangesTheOutput()
    {
        using var h = new SchedulerHarness(_model, _tokenizer);
        var changed = 0;
        foreach (var prompt in Prompts)
        {
            var args = h.Run(Request(prompt, 0f, seed: 1, maxTokens: 8, decoding: new ArgsSpec(10, 3f)));
            var greedy = h.Run(Request(prompt, 0f, seed: 1, maxTokens: 8));
            if (!args.Tokens().SequenceEqual(greedy.Tokens())) changed++;
            var prefix = prompt.ToList();
            foreach (var chosen in args.Tokens())
            {
                Assert.Equal(IndependentArgsChoice(_model, _head, prefix, k: 10, weight: 3f), chosen);
                prefix.Add(chosen);
            }
        }
        Assert.True(changed > 0, "a weight of 3 changed no output: the reward is not steering");
    }

    internal static int IndependentArgsChoice(DecoderModel model, RewardHead head, List<int> prefix, int k, float weight)
    {
        using var dec = new BatchDecoder(model, 1);
        var seq = dec.TryAllocate()!;
        var logits = dec.Prefill(seq, prefix.ToArray()).ToArray();
        var candidates = Enumerable.Range(0, logits.Length).OrderByDescending(i => logits[i]).ThenBy(i => i).Take(k).ToList();
        var best = -1;
        var bestScore = double.NegativeInfinity;
        foreach (var v in candidates)
        {
            using var scorer = new BatchDecoder(model, 1);
            var s = scorer.TryAllocate()!;
            scorer.SetRewardHead(s, head);
            scorer.Prefill(s, [.. prefix, v]);
            var score = logits[v] + weight * (double)s.Reward;
            if (score > bestScore + 1e-5 || (Math.Abs(score - bestScore) <= 1e-5 && v < best))
            {
                best = v;
                bestScore = score;
            }
        }
        return best;
    }

    /// <summary>A head on block 2's output needs each candidate's pass: k forked rows per step.</summary>
    [Fact]
    public void Args_ForkedCandidates_WeightZeroIsGreedy_AndChoicesEqualAnIndependentScoring()
    {
        using var model = DecoderModel.Load(Fixtures.TinyLlama, new RuntimeOptions { MaxBatch = 8, MaxContext = 64 });
        var tokenizer = TokenizerLoader.Load(Fixtures.TinyLlama, model.Config.VocabSize);
        var headDir = RewardHeadTests.WriteRandomHead(model.Config, layer: 2, "final_norm", "tanh", "last", seed: 9);
        var head = new RewardHead(RewardHeadReader.ReadFolder(headDir, model.Config), model, "t/deep@1");
        using var h = new SchedulerHarness(model, tokenizer);
        int[] prompt = [3, 141, 59, 26, 5];
        GenerationRequest R(DecodingSpec spec) => new()
        {
            PromptTokens = prompt,
            Sampling = new SamplingParameters { Temperature = 0f, MaxTokens = 6, IgnoreEos = true },
            RewardHead = head,
            ReturnTokenRewards = true, // every token gets an event (the fixture's byte tokenizer renders some as nothing)
            Decoding = spec,
        };
        var greedy = h.Run(R(SamplingSpec.Instance));
        Assert.Equal(greedy.Tokens(), h.Run(R(new ArgsSpec(4, 0f))).Tokens());

        var args = h.Run(R(new ArgsSpec(4, 25f)));
        Assert.Equal(6, args.Tokens().Count);
        Assert.Equal(4 * 6, args.Handle.GeneratedTokens);
        var prefix = prompt.ToList();
        foreach (var chosen in args.Tokens())
        {
            Assert.Equal(IndependentArgsChoice(model, head, prefix, k: 4, weight: 25f), chosen);
            prefix.Add(chosen);
        }
        Assert.Equal(0, h.Decoder.ActiveCount);
    }

    [Theory]
    [InlineData("none", "reward_head")]
    [InlineData("k0", "alignment.k")]
    [InlineData("k65", "alignment.k")]
    [InlineData("weightNaN", "alignment.weight")]
    [InlineData("n0", "alignment.n")]
    [InlineData("n99", "alignment.n")]
    [InlineData("choices", "n")]
    public void Submit_InvalidAlignment_ThrowsNamingTheField(string what, string param)
    {
        using var h = new SchedulerHarness(_model, _tokenizer);
        var r = Request(Prompts[0], 0f, 1, decoding: what switch
        {
            "k0" => new ArgsSpec(0),
            "k65" => new ArgsSpec(65),
            "weightNaN" => new ArgsSpec(10, float.NaN),
            "n0" => new BestOfNSpec(0),
            "n99" => new BestOfNSpec(99),
            _ => new BestOfNSpec(2),
        });
        if (what == "none") r = r with { RewardHead = null };
        if (what == "choices") r = r with { Choices = 2 };
        var e = Assert.Throws<SamplingParameterException>(() => h.Scheduler.Submit(r, out _));
        Assert.Equal(param, e.Param);
    }
}

/// <summary>DARWIN's mechanics on the demo model.</summary>
public sealed class DarwinTests : IDisposable
{
    private readonly DecoderModel _model = DecoderModel.Load(DemoModelReferenceTests.DemoDirectory, new RuntimeOptions { MaxBatch = 16, MaxContext = 256 });
    private readonly ITokenizer _tokenizer;
    private readonly RewardHead _head;

    public DarwinTests()
    {
        _tokenizer = TokenizerLoader.Load(DemoModelReferenceTests.DemoDirectory, _model.Config.VocabSize);
        _head = RewardHeadTests.DemoHead(_model);
    }

    public void Dispose() => _model.Dispose();

    private int[] Chat(string user) => [0, 1, .. _tokenizer.Encode(user), 3, 2];

    private GenerationRequest Request(string instruction, float temperature, int maxTokens, DecodingSpec? spec = null) => new()
    {
        PromptTokens = Chat(instruction),
        Sampling = new SamplingParameters { Temperature = temperature, Seed = 5, MaxTokens = maxTokens, IgnoreEos = true },
        RewardHead = _head,
        Decoding = spec ?? SamplingSpec.Instance,
    };

    private DarwinSpec Spec(string instruction, int variants, int interval, int survivors, int iterations = 1) => new()
    {
        Instruction = instruction,
        Variants = variants,
        Interval = interval,
        Survivors = survivors,
        Iterations = iterations,
        RenderPrompt = Chat,
        RenderMutation = text => Chat("Say it in other words: " + text),
    };

    /// <summary>
    /// Two greedy beams, one survivor, a selection after 4 tokens: the loser becomes a copy of the winner (its KV forked,
    /// its text copied), so both continue identically: equal final rewards, and the answer equals a plain greedy run of
    /// the winning instruction.
    /// </summary>
    [Fact]
    public void Darwin_ReplacedBeam_ContinuesExactlyAsTheSurvivor()
    {
        using var h = new SchedulerHarness(_model, _tokenizer, rows: 8);
        const string instruction = "Tell me a fortune.";
        var result = h.Run(Request(instruction, 0f, 12, Spec(instruction, variants: 2, interval: 4, survivors: 1)));
        var report = result.Handle.Alignment!;
        Assert.Equal("darwin", report.Method);
        Assert.Equal(2, report.Variants!.Count);
        Assert.Equal(instruction, report.Variants[0]);
        Assert.Equal(2, report.CandidateRewards!.Count);
        Assert.Equal(report.CandidateRewards[0], report.CandidateRewards[1]);

        // Which instruction won the selection: the answer is that instruction's plain greedy continuation.
        var plain = report.Variants.Select(v => h.Run(Request(v, 0f, 12)).Tokens()).ToList();
        Assert.Contains(result.Tokens(), plain);
        Assert.Equal(12, result.Tokens().Count);
        Assert.True(result.Handle.GeneratedTokens >= 2 * 12, "beams and the mutation count as generated tokens");
        Assert.Equal(0, h.Decoder.ActiveCount);
    }

    /// <summary>
    /// Every beam ends (max_tokens = interval + 1) in the step in which the selection's scores come in: the selection
    /// then finds no beam left and the final scoring must start at once, since no row is left to bring another step
    /// (this request used to stay running with no rows, the scheduler stepping empty batches forever).
    /// </summary>
    [Fact]
    public void Darwin_AllBeamsEndingAtASelection_StillFinishes()
    {
        using var h = new SchedulerHarness(_model, _tokenizer, rows: 8);
        const string instruction = "Tell me a fortune.";
        var result = h.Run(Request(instruction, 0f, 5, Spec(instruction, variants: 2, interval: 4, survivors: 1)));
        Assert.Equal(2, result.Handle.Alignment!.CandidateRewards!.Count);
        Assert.Equal(5, result.Tokens().Count);
        Assert.Equal(0, h.Decoder.ActiveCount);
    }

    [Fact]
    public void Darwin_SampledBeamsAndTwoIterations_ReturnTheBestScoredBeam()
    {
        using var h = new SchedulerHarness(_model, _tokenizer, rows: 10);
        const string instruction = "Tell me something nice.";
        var result = h.Run(Request(instruction, 0.8f, 16, Spec(instruction, variants: 4, interval: 5, survivors: 2, iterations: 2)));
        var report = result.Handle.Alignment!;
        Assert.Equal(8, report.CandidateRewards!.Count);
        Assert.Equal(report.CandidateRewards.Max(), report.CandidateRewards[report.Chosen!.Value]);
        Assert.Equal(report.CandidateRewards.Max(), result.Finish().Reward);
        Assert.Equal(2, report.Archive!.Count);
        Assert.All(report.Archive, a => Assert.Contains(a, report.Variants!));
        Assert.Equal(0, h.Decoder.ActiveCount);

        // The reported reward is the head's reward of the original prompt + the answer.
        using var dec = new BatchDecoder(_model, 1);
        var seq = dec.TryAllocate()!;
        dec.SetRewardHead(seq, _head);
        dec.Prefill(seq, [.. Chat(instruction), .. result.Tokens()]);
        Assert.InRange(Math.Abs(seq.Reward - result.Finish().Reward!.Value), 0, 1e-4);
    }
}
