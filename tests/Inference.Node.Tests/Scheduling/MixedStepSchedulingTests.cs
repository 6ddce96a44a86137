using Serving.Inference.EarlyExit;
using Serving.Inference.Engine;
using Serving.Inference.Runtime;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;
using Serving.Inference.Tokenization;
using Xunit;

namespace Serving.Inference.Node.Tests.Scheduling;

/// <summary>
/// The scheduler with mixed steps (decode tokens and prompt chunks in one engine pass), driven one iteration at a time:
/// what each request gets equals the whole-step scheduler's, running streams get a token every iteration while prompts
/// arrive, the step's token budget holds, and a mixed iteration allocates nothing.
/// </summary>
public sealed class MixedStepSchedulingTests : IDisposable
{
    private readonly DecoderModel _model = DecoderModel.Load(Models.TinyGpt2, new RuntimeOptions { MaxContext = 256, Threads = 1, PackedSteps = true });
    private readonly ITokenizer _tokenizer;
    private readonly List<IDisposable> _owned = [];

    public MixedStepSchedulingTests() => _tokenizer = TokenizerLoader.Load(Models.TinyGpt2, _model.Config.VocabSize);

    public void Dispose()
    {
        foreach (var d in _owned) d.Dispose();
        _model.Dispose();
    }

    private (GenerationScheduler Scheduler, BatchDecoder Decoder) Scheduler(bool mixed, int slots = 6, int prefill = 512, int stepTokens = 128)
    {
        var decoder = new BatchDecoder(_model, slots);
        var scheduler = new GenerationScheduler(decoder, _tokenizer,
            new SchedulerOptions { MixedSteps = mixed, MaxPrefillTokensPerStep = prefill, MaxTokensPerStep = stepTokens });
        _owned.Add(scheduler);
        _owned.Add(decoder);
        return (scheduler, decoder);
    }

    private static GenerationRequest Request(int[] prompt, int maxTokens, float temperature = 0f, ulong? seed = null, int choices = 1) => new()
    {
        PromptTokens = prompt,
        Sampling = new SamplingParameters { MaxTokens = maxTokens, Temperature = temperature, Seed = seed, IgnoreEos = true },
        Choices = choices,
        Logprobs = true, // an event per token, each with its id
    };

    private static GenerationHandle Submit(GenerationScheduler s, GenerationRequest r)
    {
        Assert.Equal(SubmitStatus.Accepted, s.Submit(r, out var h));
        return h!;
    }

    private static List<int> Tokens(List<GenerationEvent> events, int choice = 0) =>
        events.Where(e => e.Kind == GenerationEventKind.Token && e.TokenId >= 0 && e.Choice == choice).Select(e => e.TokenId).ToList();

    private static void Read(GenerationHandle h, List<GenerationEvent> into)
    {
        while (h.Events.TryRead(out var e)) into.Add(e);
    }

    /// <summary>Submits request k at iteration arrivals[k] and steps until all complete; events per request.</summary>
    private static List<GenerationEvent>[] RunStaggered(GenerationScheduler s, GenerationRequest[] requests, int[] arrivals)
    {
        var handles = new GenerationHandle?[requests.Length];
        var events = requests.Select(_ => new List<GenerationEvent>()).ToArray();
        for (var step = 0; step < 5000; step++)
        {
            for (var k = 0; k < requests.Length; k++)
            {
                if (arrivals[k] == step) handles[k] = Submit(s, requests[k]);
            }
            s.Step();
            for (var k = 0; k < requests.Length; k++)
            {
                if (handles[k] is { } h) Read(h, events[k]);
            }
            if (step > arrivals.Max() && handles.All(h => h!.Events.Completion.IsCompleted)) return events;
        }
        throw new Xunit.Sdk.XunitException("requests did not complete");
    }

    [Fact]
    public void MixedSteps_RequestsArrivingWhileOthersRun_EachGetsWhatTheWholeStepSchedulerGives()
    {
        GenerationRequest[] requests =
        [
            Request([.. Enumerable.Range(10, 40)], 20),
            Request([3, 1, 4], 25, temperature: 1f, seed: 7),
            Request([.. Enumerable.Range(100, 70)], 12),
            Request([5, 6, 7, 8, 9], 10, temperature: 0.8f, seed: 9, choices: 2),
            Request([42], 15),
        ];
        int[] arrivals = [0, 0, 3, 4, 6];
        var (whole, _) = Scheduler(mixed: false, prefill: 16);
        var (mixed, decoder) = Scheduler(mixed: true, prefill: 16, stepTokens: 24);
        var expected = RunStaggered(whole, requests, arrivals);
        var got = RunStaggered(mixed, requests, arrivals);
        for (var k = 0; k < requests.Length; k++)
        {
            for (var c = 0; c < requests[k].Choices; c++)
            {
                Assert.Equal(requests[k].Sampling.MaxTokens, Tokens(got[k], c).Count);
                Assert.Equal(Tokens(expected[k], c), Tokens(got[k], c));
            }
        }
        Assert.True(decoder.MixedSteps > 0);
        Assert.Equal(TimeSpan.Zero, decoder.PrefillTime); // every prompt token went through mixed steps
    }

    [Fact]
    public void MixedSteps_AStepBudgetAboveAShortContext_CarriesEveryWaitingPromptInOneStep()
    {
        // The step buffers follow RuntimeOptions.MaxStepTokens, not the 24-position context: all eight prompts in the first step.
        using var model = DecoderModel.Load(Models.TinyGpt2, new RuntimeOptions { MaxContext = 24, MaxStepTokens = 128, Threads = 1, PackedSteps = true });
        using var decoder = new BatchDecoder(model, 8);
        using var s = new GenerationScheduler(decoder, _tokenizer,
            new SchedulerOptions { MixedSteps = true, MaxTokensPerStep = 128, MaxPrefillTokensPerStep = 128 });
        var requests = Enumerable.Range(0, 8).Select(k => Request([.. Enumerable.Range(10 + 20 * k, 14)], 6, temperature: k % 2, seed: (ulong)k)).ToArray();
        var handles = requests.Select(r => Submit(s, r)).ToArray();
        s.Step();
        Assert.Equal(1, decoder.MixedSteps);
        Assert.Equal(8 * 14, decoder.MixedStepTokens);
        var got = handles.Select(_ => new List<GenerationEvent>()).ToArray();
        for (var step = 0; step < 200 && !handles.All(h => h.Events.Completion.IsCompleted); step++)
        {
            s.Step();
            for (var k = 0; k < handles.Length; k++) Read(handles[k], got[k]);
        }
        for (var k = 0; k < handles.Length; k++) Read(handles[k], got[k]);

        // Each request gets what the whole-step scheduler on a long-context model gives it.
        var (whole, _) = Scheduler(mixed: false, slots: 8);
        var expected = RunStaggered(whole, requests, new int[requests.Length]);
        for (var k = 0; k < requests.Length; k++)
        {
            Assert.Equal(6, Tokens(got[k]).Count);
            Assert.Equal(Tokens(expected[k]), Tokens(got[k]));
        }
    }

    [Fact]
    public void MixedSteps_ABudgetTheStepBuffersCannotHold_IsRefusedNamingTheSetting()
    {
        // Buffers sized by the 24-position context: a 128-token budget is refused, not silently cut to 24.
        using var model = DecoderModel.Load(Models.TinyGpt2, new RuntimeOptions { MaxContext = 24, Threads = 1, PackedSteps = true });
        using var decoder = new BatchDecoder(model, 8);
        var e = Assert.Throws<ArgumentException>(() => new GenerationScheduler(decoder, _tokenizer, new SchedulerOptions { MixedSteps = true, MaxTokensPerStep = 128 }));
        Assert.Contains("RuntimeOptions.MaxStepTokens >= 128", e.Message);
        using var fits = new GenerationScheduler(decoder, _tokenizer, new SchedulerOptions { MixedSteps = true, MaxTokensPerStep = 24 });
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(65537)]
    public void MaxStepTokens_OutOfRange_IsRefusedNamingTheSetting(int value)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new RuntimeOptions { MaxStepTokens = value }.Validate());
        Assert.Equal(nameof(RuntimeOptions.MaxStepTokens), e.ParamName);
    }

    [Fact]
    public void MixedSteps_ALongPromptArriving_RunningStreamGetsATokenEveryIterationAndTheBudgetHolds()
    {
        var (s, decoder) = Scheduler(mixed: true, slots: 4, prefill: 64, stepTokens: 10);
        var running = new[] { Submit(s, Request([7, 8, 9], 150)), Submit(s, Request([1, 2], 150)) };
        var sink = new List<GenerationEvent>();
        s.Step();
        s.Step();
        foreach (var h in running) Read(h, sink);
        var prompt = Enumerable.Range(20, 50).ToArray();
        var newcomer = Submit(s, Request(prompt, 5));
        var events = new List<GenerationEvent>();
        var iterations = 0;
        while (Tokens(events).Count == 0)
        {
            var tokensBefore = decoder.MixedStepTokens;
            s.Step();
            iterations++;
            // One step per iteration, never over its budget, and each running stream got exactly one token in it.
            Assert.InRange(decoder.MixedStepTokens - tokensBefore, 1, 10);
            foreach (var h in running)
            {
                var mine = new List<GenerationEvent>();
                Read(h, mine);
                Assert.Single(Tokens(mine));
            }
            Read(newcomer, events);
        }
        // 2 decode tokens per step leave 8 for the prompt: ceil(50 / 8) iterations to its first token.
        Assert.Equal((50 + 7) / 8, iterations);
        Assert.Equal(TimeSpan.Zero, decoder.PrefillTime);
    }

    [Fact]
    public void MixedSteps_ARowWithAnExitPolicy_RunsOnWholeStepsAndOthersAreUnchanged()
    {
        var exit = new ExitPolicy(new FixedDepthCriterion(1), 0.5f);
        GenerationRequest[] requests =
        [
            Request([.. Enumerable.Range(30, 20)], 12),
            Request([4, 5, 6], 10) with { EarlyExit = exit },
            Request([.. Enumerable.Range(60, 25)], 8),
        ];
        int[] arrivals = [0, 2, 3];
        var expected = RunStaggered(Scheduler(mixed: false, prefill: 8).Scheduler, requests, arrivals);
        var (mixed, decoder) = Scheduler(mixed: true, prefill: 8);
        var got = RunStaggered(mixed, requests, arrivals);
        for (var k = 0; k < requests.Length; k++) Assert.Equal(Tokens(expected[k]), Tokens(got[k]));
        Assert.True(decoder.MixedSteps > 0, "mixed steps ran before and after the exiting row");
        Assert.True(decoder.DecodeSteps > 0, "the exiting row's iterations used whole steps");
    }

    [Fact]
    public void MixedSteps_PromptChunksBesideDecodeRows_AllocateNothingPerIteration()
    {
        // Two streams decode while a 120-token prompt is fed 4 tokens per iteration: 30 mixed steps, of which the
        // measured windows take 24 (admission, which allocates the request's state once, happens before them).
        var (s, decoder) = Scheduler(mixed: true, slots: 4, prefill: 4);
        long Measure()
        {
            var handles = Enumerable.Range(0, 2).Select(i => Submit(s, Request([1, 2, 3 + i], 100) with { Logprobs = false })).ToList();
            void Drain() { foreach (var h in handles) while (h.Events.TryRead(out _)) { } }
            for (var i = 0; i < 5; i++) { s.Step(); Drain(); }
            handles.Add(Submit(s, Request([.. Enumerable.Range(100, 120)], 4) with { Logprobs = false }));
            s.Step(); // admits it
            Drain();
            var stepsBefore = decoder.MixedSteps;
            var least = long.MaxValue;
            for (var w = 0; w < 3; w++)
            {
                var before = GC.GetAllocatedBytesForCurrentThread();
                for (var i = 0; i < 8; i++)
                {
                    s.Step();
                    Drain();
                }
                least = Math.Min(least, GC.GetAllocatedBytesForCurrentThread() - before);
            }
            Assert.Equal(24, decoder.MixedSteps - stepsBefore);
            while (s.Status.RunningRequests > 0) { s.Step(); Drain(); }
            return least;
        }
        Measure(); // the first run sees each token's text once (interned after)
        var bytes = Measure();
        Assert.True(bytes == 0, $"{bytes} bytes over 8 mixed iterations in every window");
    }

    [Fact]
    public void SchedulerOptions_MaxTokensPerStepBelowOne_IsRefused()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new SchedulerOptions { MaxTokensPerStep = 0 }.Validate());
        Assert.Equal("MaxTokensPerStep", e.ParamName);
    }
}
