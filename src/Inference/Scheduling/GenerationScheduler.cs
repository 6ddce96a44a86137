using Serving.Inference.Decoding;
using Serving.Inference.Engine;
using Serving.Inference.Output;
using Serving.Inference.Sampling;
using Serving.Inference.Tokenization;

namespace Serving.Inference.Scheduling;

/// <summary>
/// Continuous (iteration-level) batching over one <see cref="BatchDecoder"/>: decides who runs and how many prompt
/// tokens each gets; what a request does with its logits is its <see cref="IDecodingStrategy"/>'s business. Each iteration:
/// <list type="number">
/// <item>ends requests that were cancelled or passed their deadline, freeing their KV rows before the decode step;</item>
/// <item>prefills: first the prompts already being prefilled, then waiting requests in the <see cref="IQueuePolicy"/>'s
/// order while KV rows (as many as the request's spec reserves) and an adapter slot (<see cref="AdapterSlotResidency"/>)
/// are free, at most <see cref="SchedulerOptions.MaxPrefillTokensPerStep"/> prompt tokens per iteration; longer prompts
/// continue in the next iterations;</item>
/// <item>runs one step in one of two shapes (<c>GenerationScheduler.StepShapes.cs</c>: whole steps, or with
/// <see cref="SchedulerOptions.MixedSteps"/> decode tokens and prompt chunks in one packed pass) and hands each row's
/// logits to its request's strategy, which samples, emits, feeds, forks and releases rows; batch composition never
/// changes what a request samples.</item>
/// </list>
/// A prompt's last token is always fed by a decode step (or the prefill that ends the prompt), so every live row has a
/// pending token at each step. Only the scheduler thread touches the decoder; <see cref="Submit"/> and
/// <see cref="GenerationHandle.Cancel"/> are thread-safe. Tests may drive <see cref="Step"/> directly instead of
/// calling <see cref="Start"/>.
/// </summary>
public sealed partial class GenerationScheduler : IDisposable
{
    private readonly BatchDecoder _decoder;
    private readonly ITokenizer _tokenizer;
    private readonly int[] _eosIds;
    private readonly SchedulerOptions _options;
    private readonly ISchedulerObserver _observer;
    private readonly TimeProvider _time;
    private readonly TextInterner _interner = new();
    private readonly IQueuePolicy _queue = new TenantFairQueuePolicy();
    private readonly AdapterSlotResidency _slots;
    private readonly RowPool _pool;
    private readonly WholeSteps _wholeSteps;
    private readonly MixedSteps? _mixedSteps;

    private readonly Lock _gate = new();
    private readonly List<ScheduledRequest> _waiting = [];   // guarded by _gate
    private readonly List<ScheduledRequest> _running = [];   // scheduler thread only
    private readonly List<ScheduledRequest> _expired = [];   // scratch
    private readonly List<ScheduledRequest> _touched = [];   // scratch: requests whose rows had logits
    private readonly DecodingRow?[] _stepRows;
    private readonly SemaphoreSlim _signal = new(0);
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private Thread? _thread;
    private volatile bool _accepting = true;
    private volatile bool _abortAll;
    private volatile bool _stop;
    private long _steps;
    private volatile int _statusWaiting;
    private volatile int _statusRunning;
    private volatile int _statusRows;
    private volatile int _statusWaitingForSlot;
    private long _statusKvTokens;
    private long _promptTokens;
    private long _prefixTokensReused;

    /// <summary>Creates a scheduler over <paramref name="decoder"/>, which it then owns exclusively (but does not dispose).</summary>
    public GenerationScheduler(BatchDecoder decoder, ITokenizer tokenizer, SchedulerOptions? options = null,
        ISchedulerObserver? observer = null, TimeProvider? timeProvider = null)
    {
        _decoder = decoder;
        _tokenizer = tokenizer;
        _options = options ?? new SchedulerOptions();
        _options.Validate();
        if (_options.MixedSteps && decoder.SupportsMixedSteps && _options.MaxTokensPerStep > decoder.MaxStepTokens)
        {
            // Refused rather than capped: a silent cap at the context is how mixed steps once ran at a tenth of their budget.
            throw new ArgumentException(
                $"MaxTokensPerStep {_options.MaxTokensPerStep} exceeds the {decoder.MaxStepTokens} tokens the decoder's step buffers hold; load the model with RuntimeOptions.MaxStepTokens >= {_options.MaxTokensPerStep}",
                nameof(options));
        }
        _observer = observer ?? NullSchedulerObserver.Instance;
        _time = timeProvider ?? TimeProvider.System;
        _eosIds = tokenizer.EosTokenId is int eos ? [eos] : [];
        _stepRows = new DecodingRow?[decoder.Capacity];
        _slots = new AdapterSlotResidency(decoder.Adapters, _observer);
        _pool = new RowPool(decoder, _slots);
        _wholeSteps = new WholeSteps(this);
        _mixedSteps = _options.MixedSteps ? new MixedSteps(this, _wholeSteps) : null;
    }

    /// <summary>Longest prompt + output of one row.</summary>
    public int MaxContext => _decoder.Model.MaxContext;

    /// <summary>KV slots, i.e. the most rows (choices) running at once.</summary>
    public int Capacity => _decoder.Capacity;

    /// <summary>Most requests that may wait for a KV slot (<see cref="SchedulerOptions.MaxQueue"/>).</summary>
    public int MaxQueue => _options.MaxQueue;

    /// <summary>
    /// True when the waiting queue was full at the last iteration or submit: a submit now would most likely be
    /// <see cref="SubmitStatus.QueueFull"/>. A cheap read for callers that refuse before doing per-request work.
    /// </summary>
    public bool QueueFull => _statusWaiting >= _options.MaxQueue;

    /// <summary>The latest published status (after the last iteration, or a submit); built on each read.</summary>
    public SchedulerStatus Status => new()
    {
        Waiting = _statusWaiting,
        RunningRequests = _statusRunning,
        RunningRows = _statusRows,
        KvSlots = Capacity,
        KvTokens = Interlocked.Read(ref _statusKvTokens),
        PromptTokens = Interlocked.Read(ref _promptTokens),
        PrefixTokensReused = Interlocked.Read(ref _prefixTokensReused),
        KvTokenCapacity = (long)Capacity * MaxContext,
        Accepting = _accepting,
        Steps = Interlocked.Read(ref _steps),
        AdapterSlots = _slots.Count,
        DeviceAdapters = _slots.Resident,
        WaitingForAdapterSlot = _statusWaitingForSlot,
        Engine = _decoder.Counters,
    };

    /// <summary>Completes when the scheduler thread has ended.</summary>
    public Task Completion => _stopped.Task;

    /// <summary>
    /// Validates and queues a request. Throws <see cref="SamplingParameterException"/> naming the OpenAI field for an
    /// invalid request (<c>prompt</c>, <c>n</c>, <c>max_tokens</c>, a sampling or alignment field); returns a status
    /// when the queue is full or the scheduler is draining (handle null then).
    /// </summary>
    public SubmitStatus Submit(GenerationRequest request, out GenerationHandle? handle)
    {
        ArgumentNullException.ThrowIfNull(request);
        handle = null;
        RequestChecks.Validate(request, _decoder);
        lock (_gate)
        {
            if (!_accepting) return SubmitStatus.Unavailable;
            if (_waiting.Count >= _options.MaxQueue) return SubmitStatus.QueueFull;
        }

        // Per-request state is built on the caller's thread so the scheduler loop does not allocate it.
        var h = new GenerationHandle(request, Wake, _time.GetUtcNow());
        var strategy = request.Decoding.Create(new DecodingSetup
        {
            Request = request,
            Handle = h,
            Tokenizer = _tokenizer,
            EosIds = _eosIds,
            VocabSize = _decoder.Model.Config.VocabSize,
            Interner = _interner,
            Observer = _observer,
            Model = _decoder.Model,
        });
        var job = new ScheduledRequest(h, strategy, request.Decoding.MaxRows(request), _pool);
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
            _pool.DeferFrees = false;
            _touched.Clear();
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
}
