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

    // Adapter slots (scheduler thread only, except the published snapshot).
    private readonly string?[] _slotKey;
    private readonly int[] _slotRows;      // sequences using the slot
    private readonly long[] _slotLastUse;  // step of last admission
    private readonly Dictionary<string, int> _slotOf = [];
    private volatile string[] _statusAdapters = [];

    // Per-tenant fairness (scheduler thread): tokens served per tenant with running requests (a virtual token counter).
    private readonly Dictionary<string, TenantUsage> _tenants = [];
    private volatile int _statusWaitingForSlot;

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
        var slots = decoder.Adapters?.Count ?? 0;
        _slotKey = new string?[slots];
        _slotRows = new int[slots];
        _slotLastUse = new long[slots];
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
        AdapterSlots = _slotKey.Length,
        DeviceAdapters = _statusAdapters,
        WaitingForAdapterSlot = _statusWaitingForSlot,
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
        if (request.Adapter is { } adapter)
        {
            if (_decoder.Adapters is null)
            {
                throw new SamplingParameterException("model", "This node serves the base model only (it has no adapter slots).");
            }
            try
            {
                _decoder.Adapters.EnsureFits(adapter.Factors);
            }
            catch (ArgumentException e)
            {
                throw new SamplingParameterException("model", $"The adapter does not fit this node's slots: {e.Message}");
            }
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
        var blockedOnSlots = 0;
        var scan = 0;
        lock (_gate) OrderWaitingByTenantService();
        while (budget > 0)
        {
            Job? next = null;
            var slot = -1;
            var copy = false;
            lock (_gate)
            {
                // FIFO by KV capacity; a request whose adapter finds no free slot is skipped (later requests may
                // go ahead) until it has waited AdapterFairnessSteps, after which nothing may take or hold a slot
                // ahead of it: slots drain as their rows finish, and it gets the next one.
                while (scan < _waiting.Count)
                {
                    var candidate = _waiting[scan];
                    if (Capacity - _decoder.ActiveCount - _reservedSlots < candidate.Rows.Length) break;
                    if (TryAcquireSlot(candidate, starving: blockedOnSlots > 0 && AnyStarving(scan), out slot, out copy))
                    {
                        next = candidate;
                        _waiting.RemoveAt(scan);
                        break;
                    }
                    if (candidate.BlockedSince < 0) candidate.BlockedSince = Interlocked.Read(ref _steps);
                    blockedOnSlots++;
                    scan++;
                }
            }
            if (next is null) break;
            if (copy)
            {
                try
                {
                    ActivateAdapter(next.Handle.Request.Adapter!, slot);
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    // The slot is left marked empty; the request ends (abort) instead of vanishing from the queue.
                    _observer.OnStepFailed(e);
                    AbortJob(next);
                    continue;
                }
            }
            Admit(next, slot);
            budget -= AdvancePrefill(next, budget);
        }
        _statusWaitingForSlot = blockedOnSlots;
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

    /// <summary>
    /// Per-tenant fairness (VTC-style): stable-sorts the waiting queue by the tokens each request's tenant has been
    /// served (prompt + output of its running and finished requests while it stayed busy), so a tenant with a long
    /// backlog does not delay a lightly served one; within a tenant, and with one tenant, the order stays FIFO. A tenant
    /// that was idle starts from the least-served busy tenant's count (it cannot bank service). Insertion sort over at
    /// most MaxQueue entries, no allocation. Under the gate.
    /// </summary>
    private void OrderWaitingByTenantService()
    {
        if (_waiting.Count < 2) return;
        var first = _waiting[0].Tenant;
        var mixed = false;
        for (var i = 1; i < _waiting.Count && !mixed; i++) mixed = !string.Equals(_waiting[i].Tenant, first, StringComparison.Ordinal);
        if (!mixed) return;
        // A tenant seen for the first time starts at the least-served busy tenant's count, frozen from now on.
        var start = MinBusyServed();
        foreach (var job in _waiting)
        {
            if (!_tenants.ContainsKey(job.Tenant)) _tenants[job.Tenant] = new TenantUsage { Served = start };
        }
        for (var i = 1; i < _waiting.Count; i++)
        {
            var job = _waiting[i];
            var key = _tenants[job.Tenant].Served;
            var j = i - 1;
            while (j >= 0 && _tenants[_waiting[j].Tenant].Served > key)
            {
                _waiting[j + 1] = _waiting[j];
                j--;
            }
            _waiting[j + 1] = job;
        }
    }

    private bool HasWaiting(string tenant)
    {
        lock (_gate)
        {
            foreach (var job in _waiting)
            {
                if (string.Equals(job.Tenant, tenant, StringComparison.Ordinal)) return true;
            }
            return false;
        }
    }

    private long MinBusyServed()
    {
        var min = long.MaxValue;
        foreach (var usage in _tenants.Values)
        {
            if (usage.Running > 0) min = Math.Min(min, usage.Served);
        }
        return min == long.MaxValue ? 0 : min;
    }

    /// <summary>Whether a request before <paramref name="end"/> in the queue has waited too long for an adapter slot (under the gate).</summary>
    private bool AnyStarving(int end)
    {
        for (var i = 0; i < end; i++)
        {
            var job = _waiting[i];
            if (job.BlockedSince >= 0 && Interlocked.Read(ref _steps) - job.BlockedSince >= _options.AdapterFairnessSteps) return true;
        }
        return false;
    }

    /// <summary>
    /// Finds the device slot for a job's adapter: the slot already holding it, else a slot no row uses (empty first,
    /// then least recently used), into which it is copied now. With <paramref name="starving"/> (an earlier request has
    /// waited too long for a slot) only adapter-free requests pass, so busy slots drain. Called under the gate.
    /// </summary>
    private bool TryAcquireSlot(Job job, bool starving, out int slot, out bool copy)
    {
        slot = -1;
        copy = false;
        if (job.Handle.Request.Adapter is not { } adapter) return true;
        if (starving) return false;
        if (_slotOf.TryGetValue(adapter.Key, out slot))
        {
            _observer.OnAdapterSlotHit(adapter.Key);
            return true;
        }
        var victim = -1;
        for (var s = 0; s < _slotKey.Length; s++)
        {
            if (_slotRows[s] > 0) continue;
            if (_slotKey[s] is null) { victim = s; break; }
            if (victim < 0 || _slotLastUse[s] < _slotLastUse[victim]) victim = s;
        }
        if (victim < 0) return false;
        slot = victim;
        copy = true;
        return true;
    }

    /// <summary>
    /// Copies a job's adapter into the slot <see cref="TryAcquireSlot"/> chose (hot swap), outside the queue lock so
    /// submitters never wait for the copy. Slots are touched by the scheduler thread only.
    /// </summary>
    private void ActivateAdapter(AdapterRef adapter, int slot)
    {
        var started = Stopwatch.GetTimestamp();
        var evicted = _slotKey[slot];
        if (evicted is not null) _slotOf.Remove(evicted);
        _slotKey[slot] = null;
        _decoder.Adapters!.Write(slot, adapter.Factors);
        _slotKey[slot] = adapter.Key;
        _slotOf[adapter.Key] = slot;
        _statusAdapters = Array.FindAll(_slotKey, k => k is not null)!;
        _observer.OnAdapterActivated(adapter.Key, slot, evicted, Stopwatch.GetElapsedTime(started));
    }

    private void Admit(Job job, int adapterSlot = -1)
    {
        if (!_tenants.TryGetValue(job.Tenant, out var usage))
        {
            usage = new TenantUsage { Served = MinBusyServed() };
            _tenants[job.Tenant] = usage;
        }
        usage.Running++;
        usage.Served += job.Prompt.Length;
        job.Usage = usage;
        var seq = _decoder.TryAllocate() ?? throw new InvalidOperationException("no free KV slot although one was counted");
        if (adapterSlot >= 0)
        {
            _decoder.SetAdapter(seq, adapterSlot);
            _slotRows[adapterSlot]++;
            _slotLastUse[adapterSlot] = Interlocked.Read(ref _steps);
        }
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
            if (child.AdapterSlot >= 0) _slotRows[child.AdapterSlot]++;
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
        job.Usage!.Served++;
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
        if (seq.AdapterSlot >= 0) _slotRows[seq.AdapterSlot]--;
        _rows.Remove(seq);
        _decoder.Release(seq);
        row.Sequence = null;
    }

    private void CompleteJob(Job job)
    {
        if (job.Usage is { } usage)
        {
            job.Usage = null;
            usage.Running--;
        }
        // Forget an idle tenant (also one whose only requests ended while waiting), so the table stays small.
        if (_tenants.TryGetValue(job.Tenant, out var state) && state.Running == 0 && !HasWaiting(job.Tenant)) _tenants.Remove(job.Tenant);
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

    /// <summary>Tokens served to a busy tenant and its running requests.</summary>
    private sealed class TenantUsage
    {
        public long Served { get; set; }
        public int Running { get; set; }
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

        /// <summary>The request's tenant ("" when none was given).</summary>
        public string Tenant => Handle.Request.Tenant ?? string.Empty;

        /// <summary>The tenant's service counter while the request runs.</summary>
        public TenantUsage? Usage { get; set; }

        /// <summary>The iteration in which this waiting request was first passed over for want of an adapter slot (-1: never).</summary>
        public long BlockedSince { get; set; } = -1;
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
