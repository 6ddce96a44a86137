using Serving.Inference.Engine;
using Serving.Inference.Runtime;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;
using Serving.Inference.Tokenization;
using Xunit;

namespace Serving.Inference.Node.Tests.Scheduling;

/// <summary>
/// Prefix reuse at admission: a prompt that starts with tokens a running request has cached copies their K/V instead of
/// prefilling them, and answers exactly as without reuse; whole steps and mixed steps alike.
/// </summary>
public sealed class PrefixReuseTests : IDisposable
{
    private readonly DecoderModel _model = DecoderModel.Load(Models.TinyGpt2, new RuntimeOptions { MaxContext = 256, Threads = 1, PackedSteps = true });
    private readonly ITokenizer _tokenizer;
    private readonly List<IDisposable> _owned = [];

    public PrefixReuseTests() => _tokenizer = TokenizerLoader.Load(Models.TinyGpt2, _model.Config.VocabSize);

    public void Dispose()
    {
        foreach (var d in _owned) d.Dispose();
        _model.Dispose();
    }

    private GenerationScheduler Scheduler(bool reuse, bool mixed)
    {
        var decoder = new BatchDecoder(_model, 4);
        var scheduler = new GenerationScheduler(decoder, _tokenizer, new SchedulerOptions { PrefixReuse = reuse, MixedSteps = mixed, MaxPrefillTokensPerStep = 16, MinSharedPrefixTokens = 8 });
        _owned.Add(scheduler);
        _owned.Add(decoder);
        return scheduler;
    }

    private static GenerationRequest Request(int[] prompt, int maxTokens) => new()
    {
        PromptTokens = prompt,
        Sampling = new SamplingParameters { MaxTokens = maxTokens, Temperature = 0, IgnoreEos = true },
        Logprobs = true,
    };

    private static readonly int[] System = [.. Enumerable.Range(30, 40)];

    /// <summary>Runs A, then B and C arriving while A runs; returns every request's tokens and the scheduler's status.</summary>
    private static (List<int>[] Tokens, SchedulerStatus Status) Run(GenerationScheduler s)
    {
        GenerationRequest[] requests =
        [
            Request([.. System, 1, 2, 3], 30),
            Request([.. System, 9, 8], 10),       // shares the 40-token system prompt
            Request([.. System, 1, 2, 3], 10),    // the same prompt as A: all but its last token
            Request([5, .. System], 10),          // no common start
        ];
        int[] arrivals = [0, 4, 6, 7];
        var handles = new GenerationHandle?[requests.Length];
        var tokens = requests.Select(_ => new List<int>()).ToArray();
        for (var step = 0; step < 500; step++)
        {
            for (var k = 0; k < requests.Length; k++)
            {
                if (arrivals[k] != step) continue;
                Assert.Equal(SubmitStatus.Accepted, s.Submit(requests[k], out handles[k]));
            }
            s.Step();
            for (var k = 0; k < requests.Length; k++)
            {
                while (handles[k] is { } h && h.Events.TryRead(out var e))
                {
                    if (e.Kind == GenerationEventKind.Token && e.TokenId >= 0) tokens[k].Add(e.TokenId);
                }
            }
            if (step > arrivals.Max() && handles.All(h => h!.Events.Completion.IsCompleted)) return (tokens, s.Status);
        }
        throw new Xunit.Sdk.XunitException("requests did not complete");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void PrefixReuse_SharedSystemPrompt_CopiesTheCachedPrefixAndAnswersAsWithout(bool mixed)
    {
        var (expected, plain) = Run(Scheduler(reuse: false, mixed));
        var (got, status) = Run(Scheduler(reuse: true, mixed));
        for (var k = 0; k < expected.Length; k++) Assert.Equal(expected[k], got[k]);
        Assert.Equal(0, plain.PrefixTokensReused);
        // B reuses the 40 system tokens, C all 42 of its 43 but the last; D nothing.
        Assert.Equal(40 + 42, status.PrefixTokensReused);
        Assert.Equal(43 + 42 + 43 + 41, status.PromptTokens);
    }

    [Fact]
    public void SharePrefix_ThenTheRest_EqualsAWholePrefill_AndRefusesWhatItCannotShare()
    {
        using var dec = new BatchDecoder(_model, 3);
        int[] prompt = [.. System, 7, 7, 7];
        var source = dec.TryAllocate()!;
        dec.Prefill(source, prompt);
        var whole = dec.TryAllocate()!;
        var expected = dec.Prefill(whole, prompt).ToArray();
        dec.Release(whole);

        var target = dec.TryAllocate()!;
        dec.SharePrefix(source, target, 40);
        Assert.Equal(40, target.Length);
        var got = dec.Prefill(target, prompt.AsSpan(40)).ToArray();
        for (var i = 0; i < expected.Length; i++) Assert.True(Math.Abs(expected[i] - got[i]) <= 1e-5, $"logit {i}: {expected[i]} vs {got[i]}");

        Assert.Throws<InvalidOperationException>(() => dec.SharePrefix(source, target, 10)); // the target is not empty
        var other = dec.TryAllocate()!;
        Assert.Throws<ArgumentOutOfRangeException>(() => dec.SharePrefix(source, other, prompt.Length + 1));
        dec.SetExitPolicy(other, new Serving.Inference.EarlyExit.ExitPolicy(new Serving.Inference.EarlyExit.FixedDepthCriterion(1), 0.5f));
        Assert.Throws<InvalidOperationException>(() => dec.SharePrefix(source, other, 10));
    }
}
