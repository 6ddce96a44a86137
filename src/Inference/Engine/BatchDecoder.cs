using Microsoft.ML.OnnxRuntime;
using Serving.Checkpoints;
using Serving.Inference.Adapters;
using Serving.Inference.Engine.Kernels;
using Serving.Inference.Graphs;
using Serving.Inference.Runtime;

namespace Serving.Inference.Engine;

/// <summary>
/// Runs a batch of sequences through a <see cref="DecoderModel"/>: batch-1 prefill of new rows into their KV slot,
/// batched decode where every row is at its own position, fork and release. Active rows always occupy slots
/// [0, <see cref="ActiveCount"/>) so a decode step binds one contiguous range of the cache; releasing a row moves the
/// last row into its slot. Per-row adapters go through the decoder's <see cref="IAdapterKernel"/>, chosen once. Not
/// thread-safe: one scheduler owns a decoder. Decode bindings are created once per batch size and reused, so a decode
/// step allocates nothing.
/// </summary>
public sealed partial class BatchDecoder : IDisposable
{
    private readonly DecoderModel _model;
    private readonly ModelConfig _c;
    private readonly DecoderBuffers _buf;
    private readonly List<Sequence> _active = [];
    private readonly StepBindings?[] _decodeBindings;
    private readonly StepBindings?[] _fusedBindings;
    private readonly RunOptions _run = new();
    private readonly IAdapterKernel? _kernel;
    private readonly AdapterGroups? _groups;
    private long _nextId;
    private bool _useFused;
    private long _decodeTicks;
    private long _prefillTicks;
    private long _mixedTicks;
    private float[] _rewardScratch = [];
    private readonly Dictionary<Rewards.OtterNetwork, SideRuntime> _sides = [];
    private readonly List<SideRuntime> _stepSides = [];

    /// <param name="adapterSlots">Adapter slots of this decoder (default and maximum: the model's <see cref="RuntimeOptions.AdapterSlots"/>).</param>
    public BatchDecoder(DecoderModel model, int? maxBatch = null, int? adapterSlots = null)
    {
        _model = model;
        _c = model.Config;
        Capacity = maxBatch ?? model.Options.MaxBatch;
        _buf = new DecoderBuffers(model, Capacity);
        _decodeBindings = new StepBindings?[Capacity + 1];
        _fusedBindings = new StepBindings?[Capacity + 1];
        var slots = Math.Min(adapterSlots ?? model.AdapterSlots, model.AdapterSlots);
        if (slots > 0)
        {
            Adapters = new AdapterSlotTable(_c, slots, model.Options.AdapterMaxRank, _buf.Device);
            _groups = new AdapterGroups(slots);
            _kernel = model.SegmentedAdapters
                ? new SegmentedAdapterKernel(_buf, Adapters, Capacity)
                : new BatchedMatMulAdapterKernel(_buf, Adapters, Capacity);
        }
        _useFused = model.SupportsFusedDecode;
        InitPacked();
    }

    /// <summary>Wall time spent in <see cref="Prefill"/> (for statistics).</summary>
    public TimeSpan PrefillTime => System.Diagnostics.Stopwatch.GetElapsedTime(0, _prefillTicks);

    /// <summary>Wall time spent in <see cref="Decode"/> (for statistics).</summary>
    public TimeSpan DecodeTime => System.Diagnostics.Stopwatch.GetElapsedTime(0, _decodeTicks);

    /// <summary>Decode steps run (for statistics).</summary>
    public long DecodeSteps { get; private set; }

    /// <summary>Sum over <see cref="DecodeSteps"/> of the rows each step decoded (average batch = this / steps).</summary>
    public long DecodeRows { get; private set; }

    /// <summary>Of <see cref="DecodeTime"/>, the time spent in mixed steps (<see cref="RunStep"/>).</summary>
    public TimeSpan MixedStepTime => System.Diagnostics.Stopwatch.GetElapsedTime(0, _mixedTicks);

    /// <summary>Calls to <see cref="Prefill"/> (for statistics).</summary>
    public long Prefills { get; private set; }

    /// <summary>Tokens fed by <see cref="Prefill"/> (for statistics).</summary>
    public long PrefillTokens { get; private set; }

    /// <summary>
    /// The step counters at once (each read live; they move only on the thread that runs the decoder): what the
    /// steps were and what they cost, for a node's status and benchmarks.
    /// </summary>
    /// <remarks>The decode-only time is taken from the tick difference, not from two rounded <see cref="TimeSpan"/>s,
    /// so that it stays exactly constant while only mixed steps run.</remarks>
    public EngineCounters Counters => new(DecodeSteps, DecodeRows,
        System.Diagnostics.Stopwatch.GetElapsedTime(0, _decodeTicks - _mixedTicks), MixedSteps, MixedStepTokens, MixedStepTime,
        Prefills, PrefillTokens, PrefillTime);

    /// <summary>Of <see cref="DecodeSteps"/>, those that ran the fused blocks (<see cref="UseFusedDecode"/>).</summary>
    public long FusedDecodeSteps { get; private set; }

    /// <summary>Sum over decode steps of the distinct adapters in the step (average = this / <see cref="DecodeSteps"/>).</summary>
    public long AdapterGroupsDecoded { get; private set; }

    /// <summary>Sum over the batched graphs' mixed steps of the grid entries G × T (tokens plus padding the adapter GEMMs ran on; 0 with the segmented operator).</summary>
    public long AdapterGridEntriesDecoded { get; private set; }

    /// <summary>Decode steps that mixed adapters (several, or some rows on none), whichever kernel ran them.</summary>
    public long MixedAdapterSteps { get; private set; }

    /// <summary>
    /// Sum over decode steps of the adapter bytes (A and B, fp32) the step read: each distinct adapter once, at its own
    /// rank (segmented operator, or every row on one adapter), at the slot's rank capacity when the batched graphs mix
    /// adapters.
    /// </summary>
    public long AdapterBytesDecoded { get; private set; }

    /// <summary>The adapter slots rows can use (null when the model was loaded without <see cref="RuntimeOptions.AdapterSlots"/>).</summary>
    public AdapterSlotTable? Adapters { get; }

    /// <summary>
    /// Makes <paramref name="seq"/> use the adapter in <paramref name="slot"/> from its next prefill or decode step on
    /// (-1: the base model). A row keeps its slot when forked; the caller must not rewrite a slot its rows still use.
    /// </summary>
    public void SetAdapter(Sequence seq, int slot)
    {
        EnsureActive(seq);
        if (slot != -1)
        {
            if (Adapters is null) throw new InvalidOperationException("this model was loaded without adapter slots (RuntimeOptions.AdapterSlots)");
            if ((uint)slot >= (uint)Adapters.Count) throw new ArgumentOutOfRangeException(nameof(slot), slot, $"slots are [0, {Adapters.Count})");
            if (Adapters[slot] is null) throw new InvalidOperationException($"adapter slot {slot} is empty");
        }
        seq.AdapterSlot = slot;
    }

    /// <summary>
    /// Makes <paramref name="head"/> score <paramref name="seq"/> from its first token on (null: none): every token fed
    /// after this (prefill or decode) adds its score, so <see cref="Sequence.Reward"/> is the reward of the cached prefix.
    /// Forks inherit the head and the state. The logits are untouched.
    /// </summary>
    public void SetRewardHead(Sequence seq, Rewards.RewardHead? head)
    {
        EnsureActive(seq);
        if (seq.Length > 0) throw new InvalidOperationException($"sequence {seq.Id} already holds {seq.Length} tokens; set its reward head before the first one");
        if (head is not null && head.ScratchSize > _rewardScratch.Length) _rewardScratch = new float[head.ScratchSize];
        if (head?.Side is { } side && !_sides.ContainsKey(side)) _sides[side] = new SideRuntime(side, _buf, Capacity, _run);
        seq.RewardHead = head;
        seq.RewardState = default;
    }

    /// <summary>Most rows that can be active at once.</summary>
    public int Capacity { get; }

    /// <summary>Rows holding a KV slot.</summary>
    public int ActiveCount => _active.Count;

    /// <summary>Active sequences, in slot order (row r of a decode step is <c>Active[r]</c>).</summary>
    public IReadOnlyList<Sequence> Active => _active;

    /// <summary>The model this decoder runs.</summary>
    public DecoderModel Model => _model;

    /// <summary>
    /// Whether decode steps whose rows are all on the base model, with no reward head and no exit policy, run every
    /// block in one session (<see cref="RuntimeOptions.FusedDecode"/>; on by default when the model was loaded with it)
    /// instead of one per layer. Same graphs, same K/V.
    /// </summary>
    public bool UseFusedDecode
    {
        get => _useFused;
        set
        {
            if (value && !_model.SupportsFusedDecode)
            {
                throw new InvalidOperationException("the model has no fused blocks (RuntimeOptions.FusedDecode off, profiling on, or weights above RuntimeOptions.FusedDecodeMaxWeightBytes)");
            }
            _useFused = value;
        }
    }

    /// <summary>The KV cache (tests read entries back).</summary>
    internal KvCache.KvCachePool KvCacheForTests => _buf.Kv;

    /// <summary>The decoder's bound buffers (tests).</summary>
    internal DecoderBuffers BuffersForTests => _buf;

    /// <summary>Bytes of KV cache held.</summary>
    public long KvCacheBytes => _buf.Kv.Bytes;

    /// <summary>Claims the next free slot, or returns null when every slot is taken (a recoverable condition).</summary>
    public Sequence? TryAllocate()
    {
        if (_active.Count == Capacity) return null;
        var seq = new Sequence(_nextId++, _active.Count);
        _active.Add(seq);
        return seq;
    }

    /// <summary>
    /// Feeds <paramref name="tokens"/> after the sequence's cached tokens (a prompt, or a later chunk) and returns the
    /// logits of the last token (valid until the next call). Optionally captures every layer's hidden states
    /// ([layers + 1, T, d]: embedding output, then after each block) and every position's logits ([T, V]).
    /// </summary>
    public ReadOnlySpan<float> Prefill(Sequence seq, ReadOnlySpan<int> tokens, float[]? hiddenCapture = null, float[]? allLogits = null)
    {
        EnsureActive(seq);
        var t = tokens.Length;
        if (t == 0) throw new ArgumentException("prefill needs at least one token", nameof(tokens));
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        if (seq.Length + t > _model.MaxContext)
        {
            throw new ArgumentOutOfRangeException(nameof(tokens), $"sequence would reach {seq.Length + t} tokens; the context holds {_model.MaxContext}");
        }
        int d = _c.HiddenSize;
        for (var i = 0; i < t; i++)
        {
            _model.Embed(tokens[i], seq.Length + i, _buf.HiddenA.Span.Slice(i * d, d));
            _buf.Positions.Span[i] = seq.Length + i;
        }
        _buf.SeqLens.Span[0] = seq.Length + t - 1;
        _buf.Total.Span[0] = seq.Length + t;
        _buf.UploadPrefill(t);
        if (hiddenCapture is not null) _buf.HiddenA.Span[..(t * d)].CopyTo(hiddenCapture);

        var side = seq.RewardHead?.Side is { } network ? _sides[network] : null;
        side?.Begin(t);
        using var sideStep = side?.Prefill(seq.Slot, t);
        using (var step = seq.AdapterSlot >= 0
            ? _kernel!.BindPrefill(seq.Slot, seq.AdapterSlot, t)
            : new StepBindings(_buf, batch: 1, seqLen: t, slot: seq.Slot))
        {
            for (var l = 0; l < _c.NumLayers; l++)
            {
                if (side is not null || seq.RewardHead?.Layer == l) _buf.Download(_buf.Input(l), (long)t * d);
                if (side is null && seq.RewardHead?.Layer == l) Score(seq, _buf.Input(l), 0, t);
                if (side is not null) side.Run(l, sideStep!);
                step.Units[l].RunWithBinding(_run, step.Layers[l]);
                if (hiddenCapture is not null)
                {
                    _buf.Download(_buf.Output(l), (long)t * d);
                    _buf.Output(l).Span[..(t * d)].CopyTo(hiddenCapture.AsSpan((l + 1) * t * d, t * d));
                }
            }
            var final = _buf.Output(_c.NumLayers - 1);
            if (side is not null) Score(seq, side.Final, 0, t);
            else if (seq.RewardHead?.Layer == _c.NumLayers)
            {
                _buf.Download(final, (long)t * d);
                Score(seq, final, 0, t);
            }
            if (allLogits is not null)
            {
                var logitsAll = new NativeBuffer<float>((long)t * _c.VocabSize);
                RunHead(final, 0, t, logitsAll, 0);
                logitsAll.Span.CopyTo(allLogits);
            }
            RunHead(final, (long)(t - 1) * d, 1, _buf.Logits, 0);
        }
        seq.Length += t;
        Prefills++;
        PrefillTokens += t;
        _prefillTicks += System.Diagnostics.Stopwatch.GetTimestamp() - started;
        return _buf.Logits.Span[.._c.VocabSize];
    }

    /// <summary>
    /// One decode step for every active row: feeds each row's <see cref="Sequence.PendingToken"/> at its own position
    /// and returns logits [ActiveCount, V] in slot order (valid until the next call).
    /// </summary>
    public ReadOnlySpan<float> Decode()
    {
        var b = _active.Count;
        if (b == 0) return [];
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        int d = _c.HiddenSize, maxTotal = 0;
        for (var r = 0; r < b; r++)
        {
            var seq = _active[r];
            if (seq.Length >= _model.MaxContext)
            {
                throw new InvalidOperationException($"sequence {seq.Id} is full ({seq.Length} tokens); release it before decoding");
            }
            if (seq.PendingToken < 0)
            {
                throw new InvalidOperationException($"sequence {seq.Id} has no pending token");
            }
            _model.Embed(seq.PendingToken, seq.Length, _buf.HiddenA.Span.Slice(r * d, d));
            _buf.Positions.Span[r] = seq.Length;
            _buf.SeqLens.Span[r] = seq.Length;
            maxTotal = Math.Max(maxTotal, seq.Length + 1);
        }
        _buf.Total.Span[0] = maxTotal;
        _buf.UploadDecode(b);
        _groups?.Find(_active, b);
        var groups = _groups?.Count ?? 0;
        // Packed blocks here only when a row may leave early: the ordinary step runs Otter side networks and either adapter
        // kernel. (A decode-only mixed step, RunStep, is the packed step for rows that need neither; the scheduler's mixed
        // steps use it, as it measured faster than this one at 8-32 rows.)
        var packed = _packedSteps is not null && AnyExitPolicy(b);
        DecodeSteps++;
        DecodeRows += b;
        AdapterGroupsDecoded += groups;
        if (_useFused && !packed && groups == 0 && !AnyRewardHead(b))
        {
            // Base rows only, no per-layer hooks: every block in one Run, then the head.
            var fused = _fusedBindings[b] ??= StepBindings.Fused(_buf, b);
            fused.Units[0].RunWithBinding(_run, fused.Layers[0]);
            _model.Head.RunWithBinding(_run, fused.Head!);
            FusedDecodeSteps++;
        }
        else if (packed)
        {
            DecodePacked(b);
        }
        else
        {
            StepBindings step;
            if (groups > 0)
            {
                step = _kernel!.BindDecode(b, _groups!, _active, out var cost);
                AdapterBytesDecoded += cost.Bytes;
                AdapterGridEntriesDecoded += cost.GridEntries;
                if (groups > 1 || _groups!.AdaptedRows < b) MixedAdapterSteps++;
            }
            else
            {
                step = _decodeBindings[b] ??= new StepBindings(_buf, batch: b, seqLen: 1, slot: 0, withHead: true);
            }
            var scored = AnyRewardHead(b);
            for (var l = 0; l < _c.NumLayers; l++)
            {
                if (scored)
                {
                    _buf.Download(_buf.Input(l), (long)b * d);
                    ScoreRows(l, _buf.Input(l), b);
                }
                foreach (var side in _stepSides) side.Capture(l, _buf.Input(l), b);
                step.Units[l].RunWithBinding(_run, step.Layers[l]);
            }
            if (scored)
            {
                _buf.Download(_buf.Output(_c.NumLayers - 1), (long)b * d);
                ScoreRows(_c.NumLayers, _buf.Output(_c.NumLayers - 1), b);
            }
            foreach (var side in _stepSides)
            {
                side.RunDecode(b);
                ScoreSideRows(side, b);
            }
            _model.Head.RunWithBinding(_run, step.Head!);
        }
        for (var r = 0; r < b; r++)
        {
            var seq = _active[r];
            seq.Length++;
            seq.PendingToken = -1;
            if (packed) continue; // packed steps count their own layers
            seq.LastLayers = _c.NumLayers;
            seq.LayersRun += _c.NumLayers;
            seq.TokensDecoded++;
        }
        _decodeTicks += System.Diagnostics.Stopwatch.GetTimestamp() - started;
        return _buf.Logits.Span[..(b * _c.VocabSize)];
    }

    /// <summary>Copies a sequence into a new slot (its cached prefix and pending token); null when no slot is free.</summary>
    public Sequence? TryFork(Sequence parent)
    {
        EnsureActive(parent);
        var child = TryAllocate();
        if (child is null) return null;
        _buf.Kv.CopySlot(parent.Slot, child.Slot, parent.Length);
        foreach (var side in _sides.Values) side.CopySlot(parent.Slot, child.Slot, parent.Length);
        child.Length = parent.Length;
        child.AdapterSlot = parent.AdapterSlot;
        child.PendingToken = parent.PendingToken;
        child.RewardHead = parent.RewardHead;
        child.RewardState = parent.RewardState;
        child.Exit = parent.Exit;
        return child;
    }

    /// <summary>
    /// Gives the empty <paramref name="target"/> the first <paramref name="length"/> cached tokens of
    /// <paramref name="source"/> (their K/V copied, not recomputed): prefix reuse for prompts that start alike. The caller
    /// vouches that the tokens are the same; both rows must use the same adapter, and neither a reward head nor an exit
    /// policy (their state or K/V depend on more than the tokens).
    /// </summary>
    public void SharePrefix(Sequence source, Sequence target, int length)
    {
        EnsureActive(source);
        EnsureActive(target);
        if (ReferenceEquals(source, target)) throw new ArgumentException("a row cannot share its own prefix", nameof(target));
        if (target.Length != 0) throw new InvalidOperationException($"sequence {target.Id} already holds {target.Length} tokens");
        if ((uint)length > (uint)source.Length) throw new ArgumentOutOfRangeException(nameof(length), length, $"the source holds {source.Length} tokens");
        if (source.AdapterSlot != target.AdapterSlot) throw new InvalidOperationException("a prefix is shared only between rows on the same adapter");
        if (source.RewardHead is not null || target.RewardHead is not null || source.Exit is not null || target.Exit is not null)
        {
            throw new InvalidOperationException("rows with a reward head or an exit policy do not share prefixes");
        }
        _buf.Kv.CopySlot(source.Slot, target.Slot, length);
        target.Length = length;
    }

    /// <summary>Frees a sequence's slot; the last active row moves into it.</summary>
    public void Release(Sequence seq)
    {
        EnsureActive(seq);
        var last = _active[^1];
        if (!ReferenceEquals(last, seq))
        {
            _buf.Kv.CopySlot(last.Slot, seq.Slot, last.Length);
            foreach (var side in _sides.Values) side.CopySlot(last.Slot, seq.Slot, last.Length);
            last.Slot = seq.Slot;
            _active[seq.Slot] = last;
        }
        _active.RemoveAt(_active.Count - 1);
        seq.IsActive = false;
    }

    public void Dispose()
    {
        foreach (var b in _decodeBindings) b?.Dispose();
        foreach (var b in _fusedBindings) b?.Dispose();
        _kernel?.Dispose();
        foreach (var side in _sides.Values) side.Dispose();
        _packedSteps?.Dispose();
        foreach (var h in _exitHeads) h?.Dispose();
        foreach (var h in _verifyHeads.Values) h.Dispose();
        Adapters?.Dispose();
        _buf.Dispose();
        _run.Dispose();
    }

    /// <summary>Whether a row of the step has a head; collects the step's side networks into <c>_stepSides</c> (no allocation).</summary>
    private bool AnyRewardHead(int b)
    {
        _stepSides.Clear();
        var any = false;
        for (var r = 0; r < b; r++)
        {
            if (_active[r].RewardHead is not { } head) continue;
            any = true;
            if (head.Side is { } network && !StepUses(network)) _stepSides.Add(_sides[network]);
        }
        return any;
    }

    private bool AnyExitPolicy(int b)
    {
        for (var r = 0; r < b; r++)
        {
            if (_active[r].Exit is not null) return true;
        }
        return false;
    }

    private bool StepUses(Rewards.OtterNetwork network)
    {
        foreach (var s in _stepSides)
        {
            if (ReferenceEquals(s.Network, network)) return true;
        }
        return false;
    }

    /// <summary>Adds the scores of rows whose Otter head reads <paramref name="side"/>'s stream (row r of its final buffer).</summary>
    private void ScoreSideRows(SideRuntime side, int b)
    {
        var width = side.Network.SideSize;
        for (var r = 0; r < b; r++)
        {
            var seq = _active[r];
            if (seq.RewardHead is { } head && ReferenceEquals(head.Side, side.Network)) seq.RewardState.Add(head.Score(side.Final.Span.Slice(r * width, width), _rewardScratch));
        }
    }

    /// <summary>Adds the scores of rows [0, b) whose head reads layer <paramref name="layer"/> (one token each, at row r of <paramref name="hidden"/>).</summary>
    private void ScoreRows(int layer, NativeBuffer<float> hidden, int b)
    {
        var d = _c.HiddenSize;
        for (var r = 0; r < b; r++)
        {
            var seq = _active[r];
            if (seq.RewardHead is { Side: null } head && head.Layer == layer) seq.RewardState.Add(head.Score(hidden.Span.Slice(r * d, d), _rewardScratch));
        }
    }

    /// <summary>Adds the scores of <paramref name="count"/> positions of one row, starting at position <paramref name="first"/> of <paramref name="hidden"/>.</summary>
    private void Score(Sequence seq, NativeBuffer<float> hidden, int first, int count)
    {
        var d = seq.RewardHead!.Side?.SideSize ?? _c.HiddenSize;
        var head = seq.RewardHead!;
        for (var i = first; i < first + count; i++) seq.RewardState.Add(head.Score(hidden.Span.Slice(i * d, d), _rewardScratch));
    }

    private void EnsureActive(Sequence seq)
    {
        if (!seq.IsActive || seq.Slot >= _active.Count || !ReferenceEquals(_active[seq.Slot], seq))
        {
            throw new InvalidOperationException($"sequence {seq.Id} is not active in this decoder");
        }
    }

    private void RunHead(NativeBuffer<float> hidden, long offset, int rows, NativeBuffer<float> logits, long logitsOffset)
    {
        using var binding = _model.Head.CreateIoBinding();
        using var input = _buf.Bound(hidden, offset, rows, _c.HiddenSize);
        using var output = logits.View(logitsOffset, rows, _c.VocabSize);
        binding.BindInput(HeadGraph.Hidden, input);
        binding.BindOutput(HeadGraph.Logits, output);
        _model.Head.RunWithBinding(_run, binding);
    }
}

/// <summary>
/// What a decoder's steps were and cost since it was made: ordinary decode steps (<see cref="BatchDecoder.Decode"/>,
/// including early-exit steps), mixed steps (<see cref="BatchDecoder.RunStep"/>: decode rows and prompt chunks in one
/// packed pass) and one-row prefills. Wall time inside the engine calls.
/// </summary>
public readonly record struct EngineCounters(
    long DecodeSteps, long DecodeRows, TimeSpan DecodeTime,
    long MixedSteps, long MixedStepTokens, TimeSpan MixedStepTime,
    long Prefills, long PrefillTokens, TimeSpan PrefillTime)
{
    /// <summary>The counters between <paramref name="before"/> and this.</summary>
    public EngineCounters Since(EngineCounters before) => new(
        DecodeSteps - before.DecodeSteps, DecodeRows - before.DecodeRows, DecodeTime - before.DecodeTime,
        MixedSteps - before.MixedSteps, MixedStepTokens - before.MixedStepTokens, MixedStepTime - before.MixedStepTime,
        Prefills - before.Prefills, PrefillTokens - before.PrefillTokens, PrefillTime - before.PrefillTime);
}
