using Serving.Inference.Engine;
using Serving.Inference.Runtime;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;
using Serving.Inference.Tokenization;
using Xunit;

namespace Serving.Inference.Node.Tests.Scheduling;

/// <summary>The scheduler without HTTP, driven one iteration at a time through <c>Step()</c>.</summary>
public sealed class GenerationSchedulerTests : IDisposable
{
    private readonly DecoderModel _model = DecoderModel.Load(Models.TinyGpt2, new RuntimeOptions { MaxContext = 256, Threads = 1 });
    private readonly ITokenizer _tokenizer;
    private readonly List<IDisposable> _owned = [];

    public GenerationSchedulerTests() => _tokenizer = TokenizerLoader.Load(Models.TinyGpt2, _model.Config.VocabSize);

    public void Dispose()
    {
        foreach (var d in _owned) d.Dispose();
        _model.Dispose();
    }

    private GenerationScheduler Scheduler(int slots = 4, SchedulerOptions? options = null, TimeProvider? time = null)
    {
        var decoder = new BatchDecoder(_model, slots);
        var scheduler = new GenerationScheduler(decoder, _tokenizer, options, timeProvider: time);
        _owned.Add(scheduler);
        _owned.Add(decoder);
        return scheduler;
    }

    private static GenerationRequest Request(int[] prompt, int maxTokens, float temperature = 0f, ulong? seed = null, DateTimeOffset? deadline = null) => new()
    {
        PromptTokens = prompt,
        Sampling = new SamplingParameters { MaxTokens = maxTokens, Temperature = temperature, Seed = seed, IgnoreEos = true },
        Logprobs = true,
        Deadline = deadline,
    };

    private static GenerationHandle Submit(GenerationScheduler s, GenerationRequest r)
    {
        Assert.Equal(SubmitStatus.Accepted, s.Submit(r, out var h));
        return h!;
    }

    private static List<GenerationEvent> Drain(GenerationHandle h)
    {
        var list = new List<GenerationEvent>();
        while (h.Events.TryRead(out var e)) list.Add(e);
        return list;
    }

    private static List<int> Tokens(IEnumerable<GenerationEvent> events) =>
        events.Where(e => e.Kind == GenerationEventKind.Token && e.TokenId >= 0).Select(e => e.TokenId).ToList();

    private static List<int> RunAlone(GenerationScheduler s, GenerationRequest r)
    {
        var h = Submit(s, r);
        var events = new List<GenerationEvent>();
        for (var i = 0; i < 1000 && !h.Events.Completion.IsCompleted; i++)
        {
            s.Step();
            events.AddRange(Drain(h));
        }
        Assert.True(h.Events.Completion.IsCompleted);
        return Tokens(events);
    }

    [Fact]
    public void Cancel_FreesTheSlotBeforeTheNextDecodeStep()
    {
        var s = Scheduler();
        var a = Submit(s, Request([1, 2, 3], 100));
        var b = Submit(s, Request([4, 5], 100));
        for (var i = 0; i < 3; i++) s.Step();
        Assert.Equal(2, s.Status.RunningRows);

        a.Cancel();
        s.Step();

        Assert.Equal(1, s.Status.RunningRows);
        var events = Drain(a);
        Assert.Equal(GenerationEventKind.Done, events[^1].Kind);
        Assert.Equal(FinishReason.Abort, events.Single(e => e.Kind == GenerationEventKind.Finished).FinishReason);
        Assert.True(a.Events.Completion.IsCompleted);
        Assert.False(b.Events.Completion.IsCompleted);
    }

    [Fact]
    public void ChunkedPrefill_KeepsRunningRowsDecoding_AndMatchesTheSoloOutput()
    {
        var prompt = Enumerable.Range(10, 30).ToArray();
        var expected = RunAlone(Scheduler(), Request(prompt, 12));

        var s = Scheduler(options: new SchedulerOptions { MaxPrefillTokensPerStep = 4 });
        var running = Submit(s, Request([7, 8, 9], 200));
        s.Step();
        s.Step();
        Drain(running);
        var newcomer = Submit(s, Request(prompt, 12));
        var newcomerEvents = new List<GenerationEvent>();
        var stepsToFirstToken = 0;
        while (Tokens(newcomerEvents).Count == 0)
        {
            s.Step();
            stepsToFirstToken++;
            // The running stream gets a token in every iteration while the long prompt is prefilled in chunks.
            Assert.Single(Tokens(Drain(running)));
            newcomerEvents.AddRange(Drain(newcomer));
        }
        Assert.True(stepsToFirstToken >= 30 / 5, $"prompt was not chunked ({stepsToFirstToken} steps)");
        while (!newcomer.Events.Completion.IsCompleted)
        {
            s.Step();
            newcomerEvents.AddRange(Drain(newcomer));
        }
        Assert.Equal(expected, Tokens(newcomerEvents));
    }

    [Fact]
    public void SeededSampling_InABatch_EqualsTheSoloRun()
    {
        var solo = RunAlone(Scheduler(), Request([3, 1, 4, 1, 5], 20, temperature: 1f, seed: 77));
        var s = Scheduler();
        var others = Enumerable.Range(0, 3).Select(i => Submit(s, Request([9, 9, i], 30, temperature: 1f, seed: (ulong)i))).ToList();
        s.Step();
        var h = Submit(s, Request([3, 1, 4, 1, 5], 20, temperature: 1f, seed: 77));
        var events = new List<GenerationEvent>();
        while (!h.Events.Completion.IsCompleted)
        {
            s.Step();
            events.AddRange(Drain(h));
        }
        Assert.Equal(solo, Tokens(events));
        Assert.All(others, o => Assert.False(o.Events.Completion.IsCompleted));
    }

    [Fact]
    public void Submit_QueueFull_IsRefused_AndDraining_IsUnavailable()
    {
        var s = Scheduler(slots: 1, options: new SchedulerOptions { MaxQueue = 2 });
        Submit(s, Request([1], 50));
        Submit(s, Request([2], 50));
        Assert.Equal(SubmitStatus.QueueFull, s.Submit(Request([3], 5), out var none));
        Assert.Null(none);

        s.Step(); // one is admitted: a place frees up
        Assert.Equal(1, s.Status.Waiting);
        Submit(s, Request([3], 5));

        s.BeginDrain();
        Assert.Equal(SubmitStatus.Unavailable, s.Submit(Request([4], 5), out _));
        Assert.False(s.Status.Accepting);
    }

    [Fact]
    public void Deadline_EndsWaitingAndRunningRequestsWithAbort()
    {
        var time = new ManualTime(DateTimeOffset.UnixEpoch);
        var s = Scheduler(slots: 1, time: time);
        var running = Submit(s, Request([1, 2], 100, deadline: time.Now.AddSeconds(10)));
        var waiting = Submit(s, Request([3, 4], 100, deadline: time.Now.AddSeconds(5)));
        s.Step();
        s.Step();
        Assert.Equal(1, s.Status.RunningRows);
        Assert.Equal(1, s.Status.Waiting);

        time.Now = time.Now.AddSeconds(6);
        s.Step();
        Assert.Equal(FinishReason.Abort, Drain(waiting).Single(e => e.Kind == GenerationEventKind.Finished).FinishReason);
        Assert.True(waiting.Events.Completion.IsCompleted);
        Assert.False(running.Events.Completion.IsCompleted);

        time.Now = time.Now.AddSeconds(6);
        s.Step();
        Assert.Equal(0, s.Status.RunningRows);
        Assert.Equal(FinishReason.Abort, Drain(running).Single(e => e.Kind == GenerationEventKind.Finished).FinishReason);
    }

    [Fact]
    public async Task StopAsync_AfterTheDrainTime_EndsRunningStreamsWithAFinishEvent()
    {
        var s = Scheduler();
        s.Start();
        var h = Submit(s, Request([1, 2, 3], 250));
        await h.Events.WaitToReadAsync();

        await s.StopAsync(TimeSpan.Zero).WaitAsync(TimeSpan.FromSeconds(30));

        var events = new List<GenerationEvent>();
        await foreach (var e in h.Events.ReadAllAsync()) events.Add(e);
        Assert.Equal(GenerationEventKind.Done, events[^1].Kind);
        Assert.Single(events, e => e.Kind == GenerationEventKind.Finished);
        Assert.Equal(SubmitStatus.Unavailable, s.Submit(Request([1], 2), out _));
    }

    [Fact]
    public async Task StopAsync_WithTime_LetsRunningStreamsFinish()
    {
        var s = Scheduler();
        s.Start();
        var h = Submit(s, Request([1, 2, 3], 10));
        await s.StopAsync(TimeSpan.FromSeconds(30)).WaitAsync(TimeSpan.FromSeconds(60));
        var events = new List<GenerationEvent>();
        await foreach (var e in h.Events.ReadAllAsync()) events.Add(e);
        Assert.Equal(FinishReason.Length, events.Single(e => e.Kind == GenerationEventKind.Finished).FinishReason);
        Assert.Equal(10, Tokens(events).Count);
    }

    [Theory]
    [InlineData(300, "max_tokens")]
    [InlineData(0, "max_tokens")]
    public void Submit_InvalidRequest_ThrowsNamingTheParam(int maxTokens, string param)
    {
        var s = Scheduler();
        var e = Assert.Throws<SamplingParameterException>(() => s.Submit(Request([1, 2], maxTokens), out _));
        Assert.Equal(param, e.Param);
    }

    [Fact]
    public void Submit_MoreChoicesThanSlots_ThrowsNamingN()
    {
        var s = Scheduler(slots: 2);
        var e = Assert.Throws<SamplingParameterException>(() => s.Submit(Request([1], 4) with { Choices = 3 }, out _));
        Assert.Equal("n", e.Param);
    }

    [Fact]
    public void MultipleChoices_ForkAfterPrefill_AndFreeAllSlots()
    {
        var s = Scheduler(slots: 3);
        var h = Submit(s, Request([5, 6, 7], 6, temperature: 1f, seed: 3) with { Choices = 3 });
        s.Step();
        Assert.Equal(3, s.Status.RunningRows);
        var events = new List<GenerationEvent>();
        while (!h.Events.Completion.IsCompleted)
        {
            s.Step();
            events.AddRange(Drain(h));
        }
        Assert.Equal(0, s.Status.RunningRows);
        for (var c = 0; c < 3; c++) Assert.Equal(6, events.Count(e => e.Kind == GenerationEventKind.Token && e.Choice == c && e.TokenId >= 0));
        Assert.Equal(18, h.CompletionTokens);
        Assert.Equal([3UL, 4UL, 5UL], h.Seeds!);
    }

    [Fact]
    public void DecodeLoop_TokensSeenBefore_AllocateNothingPerStep()
    {
        // Run the same greedy requests twice on one scheduler: the second time every token text has been seen, so its
        // string is reused, and a decode step with 1 or 4 rows allocates nothing at all (no logprobs asked).
        foreach (var rows in new[] { 1, 4 })
        {
            var s = Scheduler(slots: 4);
            var first = BytesPerStep(s, rows, out var firstText);
            var second = BytesPerStep(s, rows, out var secondText);
            Assert.Equal(firstText, secondText);
            Assert.True(second == 0, $"{second} bytes over the measured steps with {rows} row(s) (first run: {first})");
        }
    }

    [Fact]
    public void DecodeLoop_ReusedTokenText_IsTheTextTheDetokeniserGives()
    {
        // Interned token texts must not change what is streamed: repeated runs of one greedy request stream exactly
        // what the streaming detokeniser gives for the generated ids (the fixture's byte tokens are often partial UTF-8,
        // so a piece's text depends on the tokens before it).
        var s = Scheduler(slots: 2);
        (List<int> Ids, string Text) Run(bool logprobs)
        {
            var h = Submit(s, Request([5, 6, 7], 40) with { Logprobs = logprobs });
            var events = new List<GenerationEvent>();
            while (!h.Events.Completion.IsCompleted)
            {
                s.Step();
                events.AddRange(Drain(h));
            }
            return (Tokens(events), string.Concat(events.Where(e => e.Kind == GenerationEventKind.Token).Select(e => e.Text)));
        }

        // With logprobs every token has an event, so this run gives all the ids.
        var (ids, _) = Run(logprobs: true);
        Assert.Equal(40, ids.Count);
        var detok = _tokenizer.CreateStreamingDecoder(skipSpecialTokens: true);
        var expected = string.Concat(ids.Select(detok.Append)) + detok.Flush();
        for (var i = 0; i < 3; i++) Assert.Equal(expected, Run(logprobs: false).Text);
    }

    /// <summary>Bytes allocated over 60 decode steps of <paramref name="rows"/> greedy requests, after admission and warm-up.</summary>
    private static long BytesPerStep(GenerationScheduler s, int rows, out string text)
    {
        var handles = Enumerable.Range(0, rows).Select(i => Submit(s, Request([1, 2, 3 + i], 100) with { Logprobs = false })).ToList();
        var texts = new System.Text.StringBuilder();
        void Read()
        {
            // Read as the HTTP layer does, so the channel's ring buffer is reused rather than grown.
            foreach (var h in handles) while (h.Events.TryRead(out var e)) if (e.Kind == GenerationEventKind.Token) texts.Append(e.Text);
        }
        for (var i = 0; i < 20; i++) { s.Step(); Read(); } // admit, prefill, warm up
        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < 60; i++)
        {
            s.Step();
            foreach (var h in handles) while (h.Events.TryRead(out _)) { }
        }
        var bytes = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.All(handles, h => Assert.False(h.Events.Completion.IsCompleted));
        while (s.Status.RunningRequests > 0 || s.Status.Waiting > 0) { s.Step(); Read(); }
        text = texts.ToString();
        return bytes;
    }

    private sealed class ManualTime(DateTimeOffset now) : TimeProvider
    {
        public DateTimeOffset Now { get; set; } = now;

        public override DateTimeOffset GetUtcNow() => Now;
    }
}
