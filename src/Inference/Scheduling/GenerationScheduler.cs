using System.Diagnostics;
using Serving.Inference.Engine;
using Serving.Inference.Sampling;
using Serving.Inference.Tokenization;

namespace Serving.Inference.Scheduling;

/// <summary>
/// Continuous (iteration-level) batching over one <see cref="BatchDecoder"/>. Each iteration:
/// <list type="number">
/// <item>ends requests that were cancelled or passed their deadline, freeing their KV slots before the decode step;</item>
/// <item>prefills waiting requests into free slots (FIFO, a request needs a slot per choice), at most
/// <see cref="SchedulerOptions.MaxPrefillTokensPerStep"/> prompt tokens per iteration; longer prompts continue in the
/// next iterations;</item>
/// <item>runs one decode step for every row and samples each row with its request's own <see cref="TokenSampler"/>,
/// so batch composition never changes what a request samples.</item>
/// </list>
/// A prompt's last token is always fed by a decode step (or the prefill that ends the prompt), so every active row has a
/// pending token at each step. <c>n &gt; 1</c> forks the prompt's row after prefill; choice i samples with seed + i.
/// Only the scheduler thread touches the decoder; <see cref="Submit"/> and <see cref="GenerationHandle.Cancel"/> are
/// thread-safe. Tests may drive <see cref="Step"/> directly instead of calling <see cref="Start"/>.
/// </summary>
public sealed class GenerationScheduler : IDisposable
{
    private readonly BatchDecoder _decoder;
    private readonly ITokenizer _tokenizer;
    private readonly int[] _eosIds;
    private readonly SchedulerOptions _options;
    private readonly ISchedulerObserver _observer;
    private readonly TimeProvider _time;
    private readonly int _vocab;

    private readonly Lock _gate = new();
    private readonly List<Job> _waiting = [];          // guarded by _gate
    private readonly List<Job> _running = [];          // scheduler thread only
    private readonly List<Job> _expired = [];          // scratch
    private readonly Dictionary<Sequence, Row> _rows = [];
    private Row[] _stepRows;
    private const int MaxInternedTexts = 1 << 16, MaxInternedTextLength = 32;
    private readonly Dictionary<string, string> _texts = new(StringComparer.Ordinal); // scheduler thread only: see InternText
    private readonly Dictionary<string, string>.AlternateLookup<ReadOnlySpan<char>> _textLookup;
    private readonly SemaphoreSlim _signal = new(0);
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private Thread? _thread;
    private volatile bool _accepting = true;
    private volatile bool _abortAll;
    private volatile bool _stop;
    private int _reservedSlots;
    private long _steps;
    private volatile int _statusWaiting;
    private volatile int _statusRunning;
    private volatile int _statusRows;
    private long _statusKvTokens;

    /// <summary>Creates a scheduler over <paramref name="decoder"/>, which it then owns exclusively (but does not dispose).</summary>
    public GenerationScheduler(BatchDecoder decoder, ITokenizer tokenizer, SchedulerOptions? options = null,
        ISchedulerObserver? observer = null, TimeProvider? timeProvider = null)
    {
        _decoder = decoder;
        _tokenizer = tokenizer;
        _options = options ?? new SchedulerOptions();
        _options.Validate();
        _observer = observer ?? NullSchedulerObserver.Instance;
        _time = timeProvider ?? TimeProvider.System;
        _vocab = decoder.Model.Config.VocabSize;
        _eosIds = tokenizer.EosTokenId is int eos ? [eos] : [];
        _stepRows = new Row[decoder.Capacity];
        _textLookup = _texts.GetAlternateLookup<ReadOnlySpan<char>>();
    }

    /// <summary>Longest prompt + output of one row.</summary>
    public int MaxContext => _decoder.Model.MaxContext;

    /// <summary>KV slots, i.e. the most rows (choices) running at once.</summary>
    public int Capacity => _decoder.Capacity;

    /// <summary>The latest published status (after the last iteration, or a submit); built on each read.</summary>
    public SchedulerStatus Status => new()
    {
        Waiting = _statusWaiting,
        RunningRequests = _statusRunning,
        RunningRows = _statusRows,
        KvSlots = Capacity,
        KvTokens = Interlocked.Read(ref _statusKvTokens),
        KvTokenCapacity = (long)Capacity * MaxContext,
        Accepting = _accepting,
        Steps = Interlocked.Read(ref _steps),
    };

    /// <summary>Completes when the scheduler thread has ended.</summary>
    public Task Completion => _stopped.Task;

    /// <summary>
    /// Validates and queues a request. Throws <see cref="SamplingParameterException"/> naming the OpenAI field for an
    /// invalid request (<c>prompt</c>, <c>n</c>, <c>max_tokens</c>, or a sampling field); returns a status when the
    /// queue is full or the scheduler is draining (handle null then).
    /// </summary>
    public SubmitStatus Submit(GenerationRequest request, out GenerationHandle? handle)
    {
        ArgumentNullException.ThrowIfNull(request);
        handle = null;
        if (request.Adapter is not null)
        {
            throw new NotSupportedException("adapters are not supported by this scheduler yet");
        }
        var prompt = request.PromptTokens;
        if (prompt is null || prompt.Length == 0) throw new SamplingParameterException("prompt", "The prompt must contain at least one token.");
        foreach (var t in prompt)
        {
            if ((uint)t >= (uint)_vocab) throw new SamplingParameterException("prompt", $"Token id {t} is outside the vocabulary [0, {_vocab}).");
        }
        if (request.Choices < 1 || request.Choices > Capacity)
        {
            throw new SamplingParameterException("n", $"n must be between 1 and {Capacity} on this node, got {request.Choices}.");
        }
        request.Sampling.Validate(_vocab);
        if (prompt.Length >= MaxContext)
        {
            throw new SamplingParameterException("prompt", $"The prompt has {prompt.Length} tokens; this model's context holds {MaxContext} tokens including the output.");
        }
        if (prompt.Length + request.Sampling.MaxTokens > MaxContext)
        {
            throw new SamplingParameterException("max_tokens",
                $"max_tokens is {request.Sampling.MaxTokens} but the prompt has {prompt.Length} tokens and the context holds {MaxContext}; at most {MaxContext - prompt.Length} can be generated.");
        }

        lock (_gate)
        {
            if (!_accepting) return SubmitStatus.Unavailable;
            if (_waiting.Count >= _options.MaxQueue) return SubmitStatus.QueueFull;
        }

        // Per-request state is built on the caller's thread so the scheduler loop does not allocate it.
        var h = new GenerationHandle(request, Wake, _time.GetUtcNow());
        var job = new Job(h, CreateRows(request));
        lock (_gate)
        {
            if (!_accepting) return SubmitStatus.Unavailable;
            if (_waiting.Count >= _options.MaxQueue) return SubmitStatus.QueueFull;
            _waiting.Add(job);
            _statusWaiting = _waiting.Count;
        }
        Wake();
        handle = h;
        return SubmitStatus.Accepted;
    }

    /// <summary>Starts the scheduler thread.</summary>
    public void Start()
    {
        if (_thread is not null) throw new InvalidOperationException("already started");
        _thread = new Thread(Loop) { IsBackground = true, Name = "generation-scheduler" };
        _thread.Start();
    }

    /// <summary>Refuses new requests (<see cref="SubmitStatus.Unavailable"/>); queued and running ones go on.</summary>
    public void BeginDrain()
    {
        lock (_gate)
        {
            _accepting = false;
        }
        Wake();
    }

    /// <summary>
    /// Graceful stop: refuses new requests, lets queued and running ones finish for up to <paramref name="drain"/>,
    /// then ends the rest with <see cref="FinishReason.Abort"/> (their streams get a finish event, never a hang) and
    /// stops the thread.
    /// </summary>
    public async Task StopAsync(TimeSpan drain, CancellationToken cancellationToken = default)
    {
        BeginDrain();
        if (_thread is null)
        {
            _stopped.TrySetResult();
            return;
        }
        using (var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken))
        {
            cts.CancelAfter(drain);
            try
            {
                while (!IsIdle) await Task.Delay(10, cts.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // Drain time is over: end what is left.
            }
        }
        _abortAll = true;
        _stop = true;
        Wake();
        await _stopped.Task.ConfigureAwait(false);
    }

    private bool IsIdle
    {
        get
        {
            var s = Status;
            return s.Waiting == 0 && s.RunningRequests == 0;
        }
    }

    public void Dispose()
    {
        _stop = true;
        _abortAll = true;
        Wake();
        _thread?.Join(TimeSpan.FromSeconds(10));
        _signal.Dispose();
    }

    private void Wake()
    {
        try
        {
            _signal.Release();
        }
        catch (ObjectDisposedException)
        {
            // Stopped: nothing to wake.
        }
    }

    private void Loop()
    {
        try
        {
            while (true)
            {
                var busy = Step();
                if (_stop && !busy) break;
                if (!busy) _signal.Wait(TimeSpan.FromMilliseconds(200));
            }
            Step(); // ends anything submitted in a race with the stop
        }
        finally
        {
            _stopped.TrySetResult();
        }
    }

    /// <summary>
    /// Runs one iteration (cancellations, admissions and prefill, one decode step) and returns whether work remains.
    /// Called by the scheduler thread; tests call it directly on a scheduler that was not started.
    /// </summary>
    internal bool Step()
    {
        try
        {
            StepCore();
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            _observer.OnStepFailed(e);
            for (var i = _running.Count - 1; i >= 0; i--)
            {
                try
                {
                    AbortJob(_running[i]);
                }
                catch (Exception inner) when (inner is not OutOfMemoryException)
                {
                    // The decoder may be in a bad state; still end the stream so no client hangs.
                    _observer.OnStepFailed(inner);
                    _running[i].Handle.Complete();
                }
            }
            _running.Clear();
        }
        Interlocked.Increment(ref _steps);
        long kvTokens = 0;
        var active = _decoder.Active;
        for (var i = 0; i < active.Count; i++) kvTokens += active[i].Length;
        Interlocked.Exchange(ref _statusKvTokens, kvTokens);
        _statusRunning = _running.Count;
        _statusRows = _decoder.ActiveCount;
        lock (_gate)
        {
            _statusWaiting = _waiting.Count;
            return _running.Count > 0 || _waiting.Count > 0;
        }
    }

    private void StepCore()
    {
        var now = _time.GetUtcNow();

        // 1. Cancelled, expired (or, when stopping, all) requests leave before the decode step.
        for (var i = _running.Count - 1; i >= 0; i--)
        {
            var job = _running[i];
            if (_abortAll || job.Handle.IsCancellationRequested || job.Handle.Request.Deadline <= now)
            {
                _running.RemoveAt(i);
                AbortJob(job);
            }
        }
        lock (_gate)
        {
            for (var i = _waiting.Count - 1; i >= 0; i--)
            {
                var job = _waiting[i];
                if (_abortAll || job.Handle.IsCancellationRequested || job.Handle.Request.Deadline <= now)
                {
                    _waiting.RemoveAt(i);
                    _expired.Add(job);
                }
            }
        }
        foreach (var job in _expired) AbortJob(job);
        _expired.Clear();

        // 2. Prefill: first the prompts already being prefilled, then newcomers while slots and budget allow.
        var budget = _options.MaxPrefillTokensPerStep;
        for (var i = 0; i < _running.Count; i++)
        {
            var job = _running[i];
            if (job.Prefilling && !job.LastPromptTokenPending) budget -= AdvancePrefill(job, budget);
        }
        while (budget > 0)
        {
            Job? next = null;
            lock (_gate)
            {
                if (_waiting.Count > 0 && Capacity - _decoder.ActiveCount - _reservedSlots >= _waiting[0].Rows.Length)
                {
                    next = _waiting[0];
                    _waiting.RemoveAt(0);
                }
            }
            if (next is null) break;
            Admit(next);
            budget -= AdvancePrefill(next, budget);
        }
        ReleaseFinished();

        // 3. One decode step for every row.
        var b = _decoder.ActiveCount;
        if (b == 0) return;
        var active = _decoder.Active;
        for (var r = 0; r < b; r++) _stepRows[r] = _rows[active[r]];
        var logits = _decoder.Decode();
        for (var r = 0; r < b; r++)
        {
            var row = _stepRows[r];
            var span = logits.Slice(r * _vocab, _vocab);
            var job = row.Job;
            if (job.Prefilling)
            {
                // The decode fed a prompt token; only the prompt's last one yields logits we sample from.
                if (job.LastPromptTokenPending && job.PromptOffset == job.Prompt.Length)
                {
                    job.LastPromptTokenPending = false;
                    StartGenerating(job, span);
                }
                else
                {
                    job.LastPromptTokenPending = false;
                }
                continue;
            }
            if (row.Finished) continue;
            var token = SampleRow(row, span, out var logprob);
            OnToken(row, token, logprob);
        }
        Array.Clear(_stepRows, 0, b);
        ReleaseFinished();
    }

    private void Admit(Job job)
    {
        var seq = _decoder.TryAllocate() ?? throw new InvalidOperationException("no free KV slot although one was counted");
        job.Rows[0].Sequence = seq;
        _rows[seq] = job.Rows[0];
        _reservedSlots += job.Rows.Length - 1;
        job.Prefilling = true;
        _running.Add(job);
        job.Handle.Seeds = Array.ConvertAll(job.Rows, r => r.Sampler.Seed);
        _observer.OnRequestStarted(job.Handle, _time.GetUtcNow() - job.Handle.SubmittedAt);
    }

    /// <summary>Prefills up to <paramref name="budget"/> prompt tokens; the rest waits, one token fed by the decode step.</summary>
    private int AdvancePrefill(Job job, int budget)
    {
        var seq = job.Rows[0].Sequence!;
        var remaining = job.Prompt.Length - job.PromptOffset;
        var take = Math.Max(0, Math.Min(remaining, budget));
        if (take > 0)
        {
            var logits = _decoder.Prefill(seq, job.Prompt.AsSpan(job.PromptOffset, take));
            job.PromptOffset += take;
            _observer.OnPromptTokens(take);
            if (job.PromptOffset == job.Prompt.Length)
            {
                StartGenerating(job, logits);
                return take;
            }
        }
        // Keep the row in the next decode step: it feeds the next prompt token (its logits matter only if it is the last).
        seq.PendingToken = job.Prompt[job.PromptOffset++];
        job.LastPromptTokenPending = true;
        _observer.OnPromptTokens(1);
        return take;
    }

    /// <summary>The prompt is in the cache: fork a row per extra choice and sample every choice's first token.</summary>
    private void StartGenerating(Job job, ReadOnlySpan<float> logits)
    {
        job.Prefilling = false;
        var parent = job.Rows[0].Sequence!;
        for (var c = 1; c < job.Rows.Length; c++)
        {
            var child = _decoder.TryFork(parent) ?? throw new InvalidOperationException("no free KV slot for a reserved fork");
            _reservedSlots--;
            job.Rows[c].Sequence = child;
            _rows[child] = job.Rows[c];
        }
        _observer.OnFirstToken(job.Handle, _time.GetUtcNow() - job.Handle.SubmittedAt);
        foreach (var row in job.Rows)
        {
            var token = SampleRow(row, logits, out var logprob);
            OnToken(row, token, logprob);
        }
    }

    /// <summary>Samples a row; the token's logprob is computed only when the request asked for logprobs (0 otherwise).</summary>
    private static int SampleRow(Row row, ReadOnlySpan<float> logits, out float logprob)
    {
        if (row.Job.Handle.Request.Logprobs) return row.Sampler.Sample(logits, out logprob);
        logprob = 0f;
        return row.Sampler.Sample(logits);
    }

    /// <summary>
    /// The text of a token event, interned: a token's text is nearly always one of a few thousand short strings, so each
    /// is allocated once and then found by content (no allocation per token). Bounded: past <see cref="MaxInternedTexts"/>
    /// entries, or for long texts, a new string is made each time.
    /// </summary>
    private string InternText(ReadOnlySpan<char> emit)
    {
        if (_textLookup.TryGetValue(emit, out var text)) return text;
        text = new string(emit);
        if (emit.Length <= MaxInternedTextLength && _texts.Count < MaxInternedTexts) _texts.Add(text, text);
        return text;
    }

    private void OnToken(Row row, int token, float logprob)
    {
        var job = row.Job;
        var now = Stopwatch.GetTimestamp();
        if (row.LastTokenAt != 0) _observer.OnOutputToken(Stopwatch.GetElapsedTime(row.LastTokenAt, now));
        row.LastTokenAt = now;
        row.Sampler.Accept(token);
        row.Generated++;
        job.Handle.AddCompletionTokens(1);

        var finish = row.Stop.Check(token, row.Generated);
        if (finish is null && row.Sequence!.Length >= MaxContext) finish = FinishReason.Length;
        if (!row.Stop.IsStopToken(token))
        {
            string? text = null;
            if (row.Detokenizer.TryAppend(token, row.Chars, out var n) && n > 0)
            {
                if (row.Matcher.Push(row.Chars.AsSpan(0, n), out var emit)) finish = FinishReason.Stop;
                if (!emit.IsEmpty) text = InternText(emit);
            }
            if (job.Handle.Request.Logprobs)
            {
                TopLogprob[]? top = null;
                if (row.TopIds is not null)
                {
                    var k = row.Sampler.FillTopLogprobs(row.TopIds, row.TopValues);
                    top = new TopLogprob[k];
                    for (var i = 0; i < k; i++) top[i] = new TopLogprob(row.TopIds[i], row.TopValues![i]);
                }
                job.Handle.Write(new GenerationEvent(GenerationEventKind.Token, row.Choice, text ?? string.Empty, token, logprob, top, null));
            }
            else if (text is not null)
            {
                job.Handle.Write(new GenerationEvent(GenerationEventKind.Token, row.Choice, text, token, logprob, null, null));
            }
        }

        if (finish is FinishReason reason)
        {
            FinishRow(row, reason);
        }
        else
        {
            row.Sequence!.PendingToken = token;
        }
    }

    /// <summary>Emits held-back text and the finish event; the slot is released at the end of the phase.</summary>
    private static void FinishRow(Row row, FinishReason reason)
    {
        if (reason != FinishReason.Abort && !row.Matcher.IsStopped)
        {
            var n = row.Detokenizer.Flush(row.Chars);
            string? tail = null;
            if (row.Matcher.Push(row.Chars.AsSpan(0, n), out var emit)) reason = FinishReason.Stop;
            if (!emit.IsEmpty) tail = new string(emit);
            var rest = row.Matcher.Flush();
            if (!rest.IsEmpty) tail = (tail ?? string.Empty) + new string(rest);
            if (tail is not null) row.Job.Handle.Write(new GenerationEvent(GenerationEventKind.Token, row.Choice, tail, -1, 0f, null, null));
        }
        row.Finished = true;
        row.Reason = reason;
        row.Job.Handle.Write(new GenerationEvent(GenerationEventKind.Finished, row.Choice, null, -1, 0f, null, reason));
        row.Job.Unfinished--;
    }

    /// <summary>Frees the slots of finished rows and completes requests whose choices all finished.</summary>
    private void ReleaseFinished()
    {
        for (var i = _running.Count - 1; i >= 0; i--)
        {
            var job = _running[i];
            if (job.Unfinished > 0) continue;
            _running.RemoveAt(i);
            CompleteJob(job);
        }
        // Rows of unfinished multi-choice requests that are done free their slots early.
        for (var i = 0; i < _running.Count; i++)
        {
            foreach (var row in _running[i].Rows)
            {
                if (row.Finished && row.Sequence is { IsActive: true } seq) ReleaseRow(row, seq);
            }
        }
    }

    private void ReleaseRow(Row row, Sequence seq)
    {
        _rows.Remove(seq);
        _decoder.Release(seq);
        row.Sequence = null;
    }

    private void CompleteJob(Job job)
    {
        foreach (var row in job.Rows)
        {
            if (row.Sequence is { IsActive: true } seq) ReleaseRow(row, seq);
        }
        var first = job.Rows[0].Reason ?? FinishReason.Abort;
        job.Handle.Write(new GenerationEvent(GenerationEventKind.Done, 0, null, -1, 0f, null, null));
        job.Handle.Complete();
        _observer.OnRequestFinished(job.Handle, first);
    }

    /// <summary>Ends a waiting or running request now: every unfinished choice gets an abort finish, slots are freed.</summary>
    private void AbortJob(Job job)
    {
        if (job.Prefilling) _reservedSlots -= job.Rows.Length - 1;
        job.Prefilling = false;
        foreach (var row in job.Rows)
        {
            if (!row.Finished) FinishRow(row, FinishReason.Abort);
        }
        CompleteJob(job);
    }

    private Row[] CreateRows(GenerationRequest request)
    {
        var rows = new Row[request.Choices];
        for (var c = 0; c < rows.Length; c++)
        {
            var p = request.Sampling;
            if (c > 0 && p.Seed is ulong seed) p = p with { Seed = unchecked(seed + (ulong)c) };
            rows[c] = new Row(c, new TokenSampler(p, _vocab, request.PromptTokens), new StopCriteria(p, _eosIds),
                new StopStringMatcher(p.StopStrings), _tokenizer.CreateStreamingDecoder(request.SkipSpecialTokens),
                request.Logprobs ? p.TopLogprobs ?? 0 : 0);
        }
        return rows;
    }

    /// <summary>A request in the scheduler.</summary>
    private sealed class Job
    {
        public Job(GenerationHandle handle, Row[] rows)
        {
            Handle = handle;
            Rows = rows;
            Prompt = handle.Request.PromptTokens;
            Unfinished = rows.Length;
            foreach (var r in rows) r.Job = this;
        }

        public GenerationHandle Handle { get; }
        public Row[] Rows { get; }
        public int[] Prompt { get; }
        public int PromptOffset { get; set; }
        public bool Prefilling { get; set; }
        public bool LastPromptTokenPending { get; set; }
        public int Unfinished { get; set; }
    }

    /// <summary>One choice of a request: its sequence, sampler and text pipeline.</summary>
    private sealed class Row
    {
        public Row(int choice, TokenSampler sampler, StopCriteria stop, StopStringMatcher matcher, StreamingDecoder detokenizer, int topLogprobs)
        {
            Choice = choice;
            Sampler = sampler;
            Stop = stop;
            Matcher = matcher;
            Detokenizer = detokenizer;
            Chars = new char[detokenizer.MaxCharsPerAppend];
            if (topLogprobs > 0)
            {
                TopIds = new int[topLogprobs];
                TopValues = new float[topLogprobs];
            }
        }

        public Job Job { get; set; } = null!;
        public int Choice { get; }
        public TokenSampler Sampler { get; }
        public StopCriteria Stop { get; }
        public StopStringMatcher Matcher { get; }
        public StreamingDecoder Detokenizer { get; }
        public char[] Chars { get; }
        public int[]? TopIds { get; }
        public float[]? TopValues { get; }
        public Sequence? Sequence { get; set; }
        public int Generated { get; set; }
        public bool Finished { get; set; }
        public FinishReason? Reason { get; set; }
        public long LastTokenAt { get; set; }
    }
}
