using Microsoft.ML.OnnxRuntime;
using Serving.Checkpoints;
using Serving.Inference.Adapters;
using Serving.Inference.Graphs;
using Serving.Inference.KvCache;
using Serving.Inference.Runtime;

namespace Serving.Inference.Engine;

/// <summary>
/// Runs a batch of sequences through a <see cref="DecoderModel"/>: batch-1 prefill of new rows into their KV slot,
/// batched decode where every row is at its own position, fork and release. Active rows always occupy slots
/// [0, <see cref="ActiveCount"/>) so a decode step binds one contiguous range of the cache; releasing a row moves the
/// last row into its slot. Not thread-safe: one scheduler owns a decoder. Decode bindings are created once per batch
/// size and reused, so a decode step allocates nothing.
/// </summary>
public sealed class BatchDecoder : IDisposable
{
    private readonly DecoderModel _model;
    private readonly ModelConfig _c;
    private readonly KvCachePool _kv;
    private readonly NativeBuffer<float> _hiddenA;
    private readonly NativeBuffer<float> _hiddenB;
    private readonly NativeBuffer<int> _seqLens;
    private readonly NativeBuffer<int> _total;
    private readonly NativeBuffer<long> _positions;
    private readonly NativeBuffer<float> _logits;
    private readonly List<Sequence> _active = [];
    private readonly StepBindings?[] _decodeBindings;
    private readonly RunOptions _run = new();
    private readonly bool _rotary;
    private readonly StepBindings?[] _fusedBindings;
    private long _nextId;
    private bool _useFused;

    // Adapters (null / empty when the model has no adapter slots). A mixed step's groups are the slot table's block
    // positions [0, G) (the table compacts them); group g's tokens are entries [g, 0..n_g) of a [G, T] grid.
    private readonly NativeBuffer<long>? _loraIndex;        // [G, T, 2]: (row, position) of each group's tokens, padded
    private readonly NativeBuffer<float>? _loraMask;        // [G, T, 1]: 1 real, 0 padding
    private readonly NativeBuffer<long>? _loraTokens;       // [batch, 1, 2]: (group, entry) of each row's update
    private readonly OrtValue?[,] _loraIndexViews = new OrtValue?[0, 0]; // [G - 1, T - 1]
    private readonly OrtValue?[,] _loraMaskViews = new OrtValue?[0, 0];
    private readonly MixedBindings?[] _mixedBindings = [];  // [batch]: rows on several adapters (or some on none)
    private readonly DenseBindings?[] _denseBindings = [];  // [batch]: every row on one adapter
    private const int DenseVariant = -2;                     // StepBindings "variant" of the all-one-adapter blocks
    private const int BatchedVariant = -3;                   // StepBindings "variant" of the batched blocks
    private const int SegmentedVariant = -4;                 // StepBindings "variant" of the segmented blocks
    private readonly bool _segmented;                        // adapters run SegmentedLoraOp (one variant for every step)
    private readonly NativeBuffer<long>? _plan;             // SegmentedLoraOp plan: G, G × (position, start, count), tokens
    private readonly StepBindings?[] _segmentedBindings = []; // [batch]
    private readonly int[] _groupOfSlot = [];
    private readonly int[] _groupSlots = [];
    private readonly int[] _groupFill = [];

    /// <param name="adapterSlots">Adapter slots of this decoder (default and maximum: the model's <see cref="RuntimeOptions.AdapterSlots"/>).</param>
    public BatchDecoder(DecoderModel model, int? maxBatch = null, int? adapterSlots = null)
    {
        _model = model;
        _c = model.Config;
        Capacity = maxBatch ?? model.Options.MaxBatch;
        _kv = new KvCachePool(_c.NumLayers, Capacity, _c.NumKvHeads, model.MaxContext, _c.HeadDim);
        var rows = Math.Max(Capacity, model.MaxContext);
        _hiddenA = new NativeBuffer<float>((long)rows * _c.HiddenSize);
        _hiddenB = new NativeBuffer<float>((long)rows * _c.HiddenSize);
        _positions = new NativeBuffer<long>(rows);
        _seqLens = new NativeBuffer<int>(Capacity);
        _total = new NativeBuffer<int>(1);
        _logits = new NativeBuffer<float>((long)Capacity * _c.VocabSize);
        _decodeBindings = new StepBindings?[Capacity + 1];
        _fusedBindings = new StepBindings?[Capacity + 1];
        _rotary = _c.Architecture == ModelArchitecture.Llama;
        var slots = Math.Min(adapterSlots ?? model.AdapterSlots, model.AdapterSlots);
        if (slots > 0)
        {
            Adapters = new AdapterSlotTable(_c, slots, model.Options.AdapterMaxRank);
            _groupOfSlot = new int[slots];
            Array.Fill(_groupOfSlot, -1);
            _groupSlots = new int[slots];
            _groupFill = new int[slots];
            _segmented = model.SegmentedAdapters;
            if (_segmented)
            {
                _plan = new NativeBuffer<long>(1 + 3L * slots + rows);
                _segmentedBindings = new StepBindings?[Capacity + 1];
            }
            else
            {
                var grid = (long)slots * (Capacity + 1); // T can exceed the largest group by one padding column
                _loraIndex = new NativeBuffer<long>(2 * grid);
                _loraMask = new NativeBuffer<float>(grid);
                _loraTokens = new NativeBuffer<long>(2L * Capacity);
                _loraIndexViews = new OrtValue?[slots, Capacity + 1];
                _loraMaskViews = new OrtValue?[slots, Capacity + 1];
                _mixedBindings = new MixedBindings?[Capacity + 1];
                _denseBindings = new DenseBindings?[Capacity + 1];
            }
        }
    }

    private long _decodeTicks;
    private long _prefillTicks;

    /// <summary>Wall time spent in <see cref="Prefill"/> (for statistics).</summary>
    public TimeSpan PrefillTime => System.Diagnostics.Stopwatch.GetElapsedTime(0, _prefillTicks);

    /// <summary>Wall time spent in <see cref="Decode"/> (for statistics).</summary>
    public TimeSpan DecodeTime => System.Diagnostics.Stopwatch.GetElapsedTime(0, _decodeTicks);

    /// <summary>Decode steps run (for statistics).</summary>
    public long DecodeSteps { get; private set; }

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

    /// <summary>Most rows that can be active at once.</summary>
    public int Capacity { get; }

    /// <summary>Rows holding a KV slot.</summary>
    public int ActiveCount => _active.Count;

    /// <summary>Active sequences, in slot order (row r of a decode step is <c>Active[r]</c>).</summary>
    public IReadOnlyList<Sequence> Active => _active;

    /// <summary>The model this decoder runs.</summary>
    public DecoderModel Model => _model;

    /// <summary>
    /// Run decode steps through the single fused graph instead of the per-layer units (needs
    /// <see cref="RuntimeOptions.BuildFusedGraph"/>; for measuring the split's cost).
    /// </summary>
    public bool UseFusedDecode
    {
        get => _useFused;
        set
        {
            if (value && _model.Fused is null) throw new InvalidOperationException("the model was loaded without BuildFusedGraph");
            _useFused = value;
        }
    }

    /// <summary>Bytes of KV cache held.</summary>
    public long KvCacheBytes => _kv.Bytes;

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
            _model.Embed(tokens[i], seq.Length + i, _hiddenA.Span.Slice(i * d, d));
            _positions.Span[i] = seq.Length + i;
        }
        _seqLens.Span[0] = seq.Length + t - 1;
        _total.Span[0] = seq.Length + t;
        if (hiddenCapture is not null) _hiddenA.Span[..(t * d)].CopyTo(hiddenCapture);

        var adapted = seq.AdapterSlot >= 0;
        var variant = !adapted ? -1 : _segmented ? SegmentedVariant : DenseVariant;
        using (var step = new StepBindings(this, batch: 1, seqLen: t, slot: seq.Slot, variant: variant))
        {
            // Every token of a prefill uses the row's adapter: one segment, or the variant without gather/scatter.
            if (adapted && _segmented) WritePrefillPlan(seq.AdapterSlot, t);
            else if (adapted) step.BindPrefillAdapter(this, seq.AdapterSlot);
            var blocks = !adapted ? _model.Blocks : _segmented ? _model.LoraSegmentedBlocks : _model.LoraDenseBlocks;
            for (var l = 0; l < _c.NumLayers; l++)
            {
                blocks[l].RunWithBinding(_run, step.Layers[l]);
                if (hiddenCapture is not null)
                {
                    Output(l).Span[..(t * d)].CopyTo(hiddenCapture.AsSpan((l + 1) * t * d, t * d));
                }
            }
            var final = Output(_c.NumLayers - 1);
            if (allLogits is not null)
            {
                var logitsAll = new NativeBuffer<float>((long)t * _c.VocabSize);
                RunHead(final, 0, t, logitsAll, 0);
                logitsAll.Span.CopyTo(allLogits);
            }
            RunHead(final, (long)(t - 1) * d, 1, _logits, 0);
        }
        seq.Length += t;
        _prefillTicks += System.Diagnostics.Stopwatch.GetTimestamp() - started;
        return _logits.Span[.._c.VocabSize];
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
            _model.Embed(seq.PendingToken, seq.Length, _hiddenA.Span.Slice(r * d, d));
            _positions.Span[r] = seq.Length;
            _seqLens.Span[r] = seq.Length;
            maxTotal = Math.Max(maxTotal, seq.Length + 1);
        }
        _total.Span[0] = maxTotal;
        var (groups, adaptedRows) = Adapters is null ? (0, 0) : GroupRowsByAdapter(b);
        DecodeSteps++;
        AdapterGroupsDecoded += groups;
        if (_useFused)
        {
            if (groups > 0) throw new InvalidOperationException("the fused measurement graph has no adapter inputs");
            var fused = _fusedBindings[b] ??= new StepBindings(this, batch: b, seqLen: 1, slot: 0, fused: true);
            _model.Fused!.RunWithBinding(_run, fused.Head!);
        }
        else if (groups > 0 && _segmented)
        {
            AdapterBytesDecoded += WriteDecodePlan(b, groups);
            if (groups > 1 || adaptedRows < b) MixedAdapterSteps++;
            Run(_model.LoraSegmentedBlocks, _segmentedBindings[b] ??= new StepBindings(this, batch: b, seqLen: 1, slot: 0, withHead: true, variant: SegmentedVariant));
        }
        else if (groups == 1 && adaptedRows == b)
        {
            // Every row on one adapter: the variant without gather/scatter, at the adapter's own rank.
            var slot = _groupSlots[0];
            AdapterBytesDecoded += Adapters![slot]!.Bytes;
            var step = _denseBindings[b] ??= new DenseBindings(new StepBindings(this, batch: b, seqLen: 1, slot: 0, withHead: true, variant: DenseVariant));
            step.Bind(this, slot);
            Run(_model.LoraDenseBlocks, step.Step);
        }
        else if (groups > 0)
        {
            var t = LayOutGroups(b, groups, adaptedRows);
            AdapterBytesDecoded += groups * Adapters!.SlotBytes;
            AdapterGridEntriesDecoded += groups * t;
            MixedAdapterSteps++;
            var step = _mixedBindings[b] ??= new MixedBindings(this, new StepBindings(this, batch: b, seqLen: 1, slot: 0, withHead: true, variant: BatchedVariant), b);
            step.Bind(this, groups, t);
            Run(_model.LoraBatchedBlocks, step.Step);
        }
        else
        {
            Run(_model.Blocks, _decodeBindings[b] ??= new StepBindings(this, batch: b, seqLen: 1, slot: 0, withHead: true));
        }
        for (var r = 0; r < b; r++)
        {
            var seq = _active[r];
            seq.Length++;
            seq.PendingToken = -1;
        }
        _decodeTicks += System.Diagnostics.Stopwatch.GetTimestamp() - started;
        return _logits.Span[..(b * _c.VocabSize)];
    }

    private void Run(InferenceSession[] blocks, StepBindings step)
    {
        for (var l = 0; l < _c.NumLayers; l++) blocks[l].RunWithBinding(_run, step.Layers[l]);
        _model.Head.RunWithBinding(_run, step.Head!);
    }

    /// <summary>Copies a sequence into a new slot (its cached prefix and pending token); null when no slot is free.</summary>
    public Sequence? TryFork(Sequence parent)
    {
        EnsureActive(parent);
        var child = TryAllocate();
        if (child is null) return null;
        _kv.CopySlot(parent.Slot, child.Slot, parent.Length);
        child.Length = parent.Length;
        child.AdapterSlot = parent.AdapterSlot;
        child.PendingToken = parent.PendingToken;
        return child;
    }

    /// <summary>Frees a sequence's slot; the last active row moves into it.</summary>
    public void Release(Sequence seq)
    {
        EnsureActive(seq);
        var last = _active[^1];
        if (!ReferenceEquals(last, seq))
        {
            _kv.CopySlot(last.Slot, seq.Slot, last.Length);
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
        foreach (var b in _mixedBindings) b?.Step.Dispose();
        foreach (var b in _denseBindings) b?.Step.Dispose();
        foreach (var b in _segmentedBindings) b?.Dispose();
        foreach (var v in _loraIndexViews) v?.Dispose();
        foreach (var v in _loraMaskViews) v?.Dispose();
        Adapters?.Dispose();
        _run.Dispose();
    }

    /// <summary>
    /// Finds the distinct adapter slots of the first <paramref name="b"/> rows (in order of first appearance, into
    /// <c>_groupSlots</c>) and how many rows each has (<c>_groupFill</c>); returns (groups, adapted rows). Allocates nothing.
    /// </summary>
    private (int Groups, int AdaptedRows) GroupRowsByAdapter(int b)
    {
        int groups = 0, adapted = 0;
        for (var r = 0; r < b; r++)
        {
            var slot = _active[r].AdapterSlot;
            if (slot < 0) continue;
            adapted++;
            if (_groupOfSlot[slot] < 0)
            {
                _groupOfSlot[slot] = groups;
                _groupSlots[groups] = slot;
                _groupFill[groups] = 0;
                groups++;
            }
            _groupFill[_groupOfSlot[slot]]++;
        }
        for (var g = 0; g < groups; g++) _groupOfSlot[_groupSlots[g]] = -1;
        return (groups, adapted);
    }

    /// <summary>Plan of a prefill whose <paramref name="t"/> tokens all use <paramref name="slot"/>: one segment.</summary>
    private void WritePrefillPlan(int slot, int t)
    {
        var plan = _plan!.Span;
        plan[0] = 1;
        plan[1] = Adapters!.PositionOf(slot);
        plan[2] = 0;
        plan[3] = t;
        var order = plan.Slice(4, t);
        for (var i = 0; i < t; i++) order[i] = i;
    }

    /// <summary>
    /// Plan of a decode step over the <paramref name="groups"/> found by <see cref="GroupRowsByAdapter"/>: one segment
    /// per adapter, its rows contiguous in the order list (rows without an adapter are left out and get the base
    /// output). Returns the adapter bytes the step reads (each adapter once, at its own rank). Allocates nothing.
    /// </summary>
    private long WriteDecodePlan(int b, int groups)
    {
        var table = Adapters!;
        var plan = _plan!.Span;
        var order = plan[(1 + 3 * groups)..];
        plan[0] = groups;
        long bytes = 0;
        var start = 0;
        for (var g = 0; g < groups; g++)
        {
            var slot = _groupSlots[g];
            plan[1 + 3 * g] = table.PositionOf(slot);
            plan[2 + 3 * g] = start;
            plan[3 + 3 * g] = _groupFill[g];
            bytes += table[slot]!.Bytes;
            _groupOfSlot[slot] = g;
            _groupFill[g] = start; // now: next entry of the segment
            start += (int)plan[3 + 3 * g];
        }
        for (var r = 0; r < b; r++)
        {
            var slot = _active[r].AdapterSlot;
            if (slot >= 0) order[_groupFill[_groupOfSlot[slot]]++] = r;
        }
        for (var g = 0; g < groups; g++) _groupOfSlot[_groupSlots[g]] = -1;
        return bytes;
    }

    /// <summary>
    /// For a mixed step: compacts the step's slots to block positions [0, G) and fills the [G, T] grid (index, mask)
    /// and each row's (group, entry); returns T. Rows without an adapter read a padding entry, whose update the mask
    /// zeroes (T grows by one when the grid would have none). Allocates nothing.
    /// </summary>
    private int LayOutGroups(int b, int groups, int adaptedRows)
    {
        var table = Adapters!;
        table.Compact(_groupSlots.AsSpan(0, groups));
        var t = 0;
        for (var g = 0; g < groups; g++) t = Math.Max(t, _groupFill[g]);
        if (groups * t == adaptedRows && adaptedRows < b) t++;
        var index = _loraIndex!.Span[..(2 * groups * t)];
        var mask = _loraMask!.Span[..(groups * t)];
        index.Clear(); // padding gathers (row 0, position 0): any valid token
        mask.Clear();
        Array.Clear(_groupFill, 0, groups); // now: entries filled per block position
        var tokens = _loraTokens!.Span;
        for (var r = 0; r < b; r++)
        {
            var slot = _active[r].AdapterSlot;
            if (slot < 0) continue;
            var g = table.PositionOf(slot);
            var e = g * t + _groupFill[g]++;
            index[2 * e] = r;
            mask[e] = 1f;
            tokens[2 * r] = g;
            tokens[2 * r + 1] = e - g * t;
        }
        if (adaptedRows < b)
        {
            var pad = 0;
            while (_groupFill[pad] == t) pad++;
            for (var r = 0; r < b; r++)
            {
                if (_active[r].AdapterSlot >= 0) continue;
                tokens[2 * r] = pad;
                tokens[2 * r + 1] = t - 1;
            }
        }
        return t;
    }

    private void EnsureActive(Sequence seq)
    {
        if (!seq.IsActive || seq.Slot >= _active.Count || !ReferenceEquals(_active[seq.Slot], seq))
        {
            throw new InvalidOperationException($"sequence {seq.Id} is not active in this decoder");
        }
    }

    // Layer l reads one buffer and writes the other, alternating.
    private NativeBuffer<float> Input(int layer) => layer % 2 == 0 ? _hiddenA : _hiddenB;
    private NativeBuffer<float> Output(int layer) => layer % 2 == 0 ? _hiddenB : _hiddenA;

    private void RunHead(NativeBuffer<float> hidden, long offset, int rows, NativeBuffer<float> logits, long logitsOffset)
    {
        using var binding = _model.Head.CreateIoBinding();
        using var input = hidden.View(offset, rows, _c.HiddenSize);
        using var output = logits.View(logitsOffset, rows, _c.VocabSize);
        binding.BindInput(HeadGraph.Hidden, input);
        binding.BindOutput(HeadGraph.Logits, output);
        _model.Head.RunWithBinding(_run, binding);
    }

    /// <summary>IO bindings of every unit for one step shape, over views of the decoder's fixed buffers.</summary>
    private sealed class StepBindings : IDisposable
    {
        private readonly List<IDisposable> _owned = [];

        public StepBindings(BatchDecoder dec, int batch, int seqLen, int slot, bool withHead = false, bool fused = false, int variant = -1)
        {
            var c = dec._c;
            long d = c.HiddenSize;
            var kvShape = new long[] { batch, c.NumKvHeads, dec._model.MaxContext, c.HeadDim };
            var a = Own(dec._hiddenA.View(0, batch, seqLen, d));
            var b = Own(dec._hiddenB.View(0, batch, seqLen, d));
            var seqLens = Own(dec._seqLens.View(0, batch));
            var total = Own(dec._total.View(0));
            var positions = Own(dec._positions.View(0, batch, seqLen));
            if (fused)
            {
                Layers = [];
                Head = Own(dec._model.Fused!.CreateIoBinding());
                Head.BindInput(BlockGraph.Hidden, a);
                Head.BindInput(BlockGraph.SeqLensK, seqLens);
                Head.BindInput(BlockGraph.TotalSeqLen, total);
                if (dec._rotary) Head.BindInput(BlockGraph.PositionIds, positions);
                for (var l = 0; l < c.NumLayers; l++)
                {
                    var key = Own(dec._kv.Keys[l].View(slot * dec._kv.SlotStride, kvShape));
                    var value = Own(dec._kv.Values[l].View(slot * dec._kv.SlotStride, kvShape));
                    Head.BindInput(FusedGraph.PastKey(l), key);
                    Head.BindInput(FusedGraph.PastValue(l), value);
                    Head.BindOutput(FusedGraph.PresentKey(l), key);
                    Head.BindOutput(FusedGraph.PresentValue(l), value);
                }
                Head.BindOutput(HeadGraph.Logits, Own(dec._logits.View(0, batch * seqLen, c.VocabSize)));
                return;
            }
            Layers = new OrtIoBinding[c.NumLayers];
            OrtValue? plan = null; // segmented variant: one plan view shared by every layer
            for (var l = 0; l < c.NumLayers; l++)
            {
                var unit = variant switch
                {
                    DenseVariant => dec._model.LoraDenseBlocks[l],
                    BatchedVariant => dec._model.LoraBatchedBlocks[l],
                    SegmentedVariant => dec._model.LoraSegmentedBlocks[l],
                    _ => dec._model.Blocks[l],
                };
                var io = Own(unit.CreateIoBinding());
                var key = Own(dec._kv.Keys[l].View(slot * dec._kv.SlotStride, kvShape));
                var value = Own(dec._kv.Values[l].View(slot * dec._kv.SlotStride, kvShape));
                io.BindInput(BlockGraph.Hidden, l % 2 == 0 ? a : b);
                io.BindOutput(BlockGraph.HiddenOut, l % 2 == 0 ? b : a);
                io.BindInput(BlockGraph.PastKey, key);
                io.BindInput(BlockGraph.PastValue, value);
                io.BindOutput(BlockGraph.PresentKey, key);
                io.BindOutput(BlockGraph.PresentValue, value);
                io.BindInput(BlockGraph.SeqLensK, seqLens);
                io.BindInput(BlockGraph.TotalSeqLen, total);
                if (dec._rotary) io.BindInput(BlockGraph.PositionIds, positions);
                if (variant == SegmentedVariant)
                {
                    plan ??= Own(dec._plan!.View(0, 1 + 3L * dec.Adapters!.Count + batch * seqLen));
                    BindSegmented(dec, io, l, plan);
                }
                Layers[l] = io;
            }
            if (withHead)
            {
                var final = dec.Output(c.NumLayers - 1);
                Head = Own(dec._model.Head.CreateIoBinding());
                Head.BindInput(HeadGraph.Hidden, Own(final.View(0, batch * seqLen, d)));
                Head.BindOutput(HeadGraph.Logits, Own(dec._logits.View(0, batch * seqLen, c.VocabSize)));
            }
        }

        public OrtIoBinding[] Layers { get; }
        public OrtIoBinding? Head { get; }

        /// <summary>
        /// Binds the segmented variant's adapter inputs: every slot's A/B, the slot ranks (all fixed buffers whose
        /// content the slot table updates in place) and the step's plan view (one for all layers).
        /// </summary>
        private static void BindSegmented(BatchDecoder dec, OrtIoBinding io, int layer, OrtValue plan)
        {
            var table = dec.Adapters!;
            io.BindInput(BlockGraph.LoraPlan, plan);
            for (var p = 0; p < AdapterFactors.ProjectionCount; p++)
            {
                var projection = (AdaptedProjection)p;
                io.BindInput(LoraNames.A[p], table.StackedA(layer, projection, table.Count));
                io.BindInput(LoraNames.B[p], table.StackedB(layer, projection, table.Count));
                io.BindInput(LoraNames.Ranks[p], table.Ranks(layer, projection));
            }
        }

        /// <summary>Binds a batch-1 prefill whose tokens all use <paramref name="slot"/> (the all-one-adapter variant).</summary>
        public void BindPrefillAdapter(BatchDecoder dec, int slot)
        {
            var table = dec.Adapters!;
            for (var l = 0; l < Layers.Length; l++)
            {
                for (var p = 0; p < AdapterFactors.ProjectionCount; p++)
                {
                    var projection = (AdaptedProjection)p;
                    Layers[l].BindInput(LoraNames.A[p], table.A(slot, l, projection));
                    Layers[l].BindInput(LoraNames.B[p], table.B(slot, l, projection));
                }
            }
        }

        public void Dispose()
        {
            for (var i = _owned.Count - 1; i >= 0; i--) _owned[i].Dispose();
        }

        public T Own<T>(T item) where T : IDisposable
        {
            _owned.Add(item);
            return item;
        }
    }

    /// <summary>
    /// The bindings of one batch size's all-rows-on-one-adapter step and which slot content is bound: the exact-rank
    /// views are rebound only when the slot or its content (version) changes, so steady decoding binds nothing.
    /// </summary>
    private sealed class DenseBindings(StepBindings step)
    {
        private int _slot = -1;
        private long _version = -1;

        public StepBindings Step { get; } = step;

        public void Bind(BatchDecoder dec, int slot)
        {
            var version = dec.Adapters!.Version(slot);
            if (_slot == slot && _version == version) return;
            Step.BindPrefillAdapter(dec, slot);
            _slot = slot;
            _version = version;
        }
    }

    /// <summary>
    /// The bindings of one batch size's mixed-adapter step. The stacked A/B views start at block 0 whatever slots the
    /// step uses, so they are rebound only when the group count G changes, and the grid views when (G, T) changes;
    /// a slot written or moved since needs no rebinding. Steady decoding binds nothing and allocates nothing.
    /// </summary>
    private sealed class MixedBindings
    {
        private int _groups = -1;
        private int _t = -1;

        public MixedBindings(BatchDecoder dec, StepBindings step, int batch)
        {
            Step = step;
            var tokens = step.Own(dec._loraTokens!.View(0, batch, 1, 2));
            foreach (var io in step.Layers) io.BindInput(BlockGraph.LoraTokens, tokens);
        }

        public StepBindings Step { get; }

        public void Bind(BatchDecoder dec, int groups, int t)
        {
            if (groups == _groups && t == _t) return;
            var index = dec._loraIndexViews[groups - 1, t - 1] ??= dec._loraIndex!.View(0, groups, t, 2);
            var mask = dec._loraMaskViews[groups - 1, t - 1] ??= dec._loraMask!.View(0, groups, t, 1);
            var table = dec.Adapters!;
            for (var l = 0; l < Step.Layers.Length; l++)
            {
                var io = Step.Layers[l];
                io.BindInput(BlockGraph.LoraIndex, index);
                io.BindInput(BlockGraph.LoraMask, mask);
                if (groups == _groups) continue;
                for (var p = 0; p < AdapterFactors.ProjectionCount; p++)
                {
                    var projection = (AdaptedProjection)p;
                    io.BindInput(LoraNames.A[p], table.StackedA(l, projection, groups));
                    io.BindInput(LoraNames.B[p], table.StackedB(l, projection, groups));
                }
            }
            _groups = groups;
            _t = t;
        }
    }

    /// <summary>Input names of the adapter factors per projection, built once (binding by name must not allocate per step).</summary>
    private static class LoraNames
    {
        public static readonly string[] A = Build(a: true);
        public static readonly string[] B = Build(a: false);
        public static readonly string[] Ranks = Enumerable.Range(0, AdapterFactors.ProjectionCount).Select(p => BlockGraph.LoraRanks((AdaptedProjection)p)).ToArray();

        private static string[] Build(bool a)
        {
            var names = new string[AdapterFactors.ProjectionCount];
            for (var p = 0; p < names.Length; p++) names[p] = BlockGraph.LoraInput((AdaptedProjection)p, a);
            return names;
        }
    }
}
