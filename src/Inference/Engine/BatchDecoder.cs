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

    // Adapters (null / empty when the model has no adapter slots).
    private readonly NativeBuffer<long>? _loraIndex;       // [rows, 2]: (row, position) of adapted tokens, grouped
    private readonly NativeBuffer<long>? _loraSizes;       // [S]: tokens per group
    private readonly OrtValue?[] _loraIndexViews = [];      // per na: [na, 2]
    private readonly OrtValue[] _loraSizeViews = [];        // per bucket: [groups]
    private readonly LoraBindings?[,] _loraBindings = new LoraBindings?[0, 0]; // [batch, bucket]
    private readonly LoraBindings?[] _denseBindings = [];   // [batch]: every row on one adapter
    private const int DenseVariant = -2;                     // StepBindings "bucket" of the all-one-adapter blocks
    private readonly int[] _groupOfSlot = [];
    private readonly int[] _groupSlots = [];
    private readonly int[] _groupOffsets = [];

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
            _loraIndex = new NativeBuffer<long>(2L * rows);
            _loraSizes = new NativeBuffer<long>(model.AdapterSlots); // sized for the largest variant
            _loraIndexViews = new OrtValue?[Capacity + 1];
            var buckets = model.LoraBuckets;
            _loraSizeViews = new OrtValue[buckets.Length];
            for (var k = 0; k < buckets.Length; k++) _loraSizeViews[k] = _loraSizes.View(0, buckets[k]);
            _loraBindings = new LoraBindings?[Capacity + 1, buckets.Length];
            _denseBindings = new LoraBindings?[Capacity + 1];
            _groupOfSlot = new int[slots];
            Array.Fill(_groupOfSlot, -1);
            _groupSlots = new int[slots];
            _groupOffsets = new int[slots + 1];
        }
    }

    /// <summary>Decode steps run (for statistics).</summary>
    public long DecodeSteps { get; private set; }

    /// <summary>Sum over decode steps of the distinct adapters in the step (average = this / <see cref="DecodeSteps"/>).</summary>
    public long AdapterGroupsDecoded { get; private set; }

    /// <summary>Sum over decode steps of the adapter bytes (A and B, fp32) the step read: each distinct adapter once.</summary>
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
        using (var step = new StepBindings(this, batch: 1, seqLen: t, slot: seq.Slot, bucket: adapted ? DenseVariant : -1))
        {
            // Every token of a prefill uses the row's adapter: the variant without gather/scatter.
            if (adapted) step.BindPrefillAdapter(this, seq.AdapterSlot);
            var blocks = adapted ? _model.LoraDenseBlocks : _model.Blocks;
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
        for (var g = 0; g < groups; g++) AdapterBytesDecoded += Adapters![_groupSlots[g]]!.Bytes;
        if (_useFused)
        {
            if (groups > 0) throw new InvalidOperationException("the fused measurement graph has no adapter inputs");
            var fused = _fusedBindings[b] ??= new StepBindings(this, batch: b, seqLen: 1, slot: 0, fused: true);
            _model.Fused!.RunWithBinding(_run, fused.Head!);
        }
        else if (groups == 1 && adaptedRows == b)
        {
            // Every row on one adapter: the variant without gather/scatter.
            var step = _denseBindings[b] ??= new LoraBindings(new StepBindings(this, batch: b, seqLen: 1, slot: 0, withHead: true, bucket: DenseVariant), 1, _c.NumLayers, dense: true);
            step.Bind(this, groups, adaptedRows);
            for (var l = 0; l < _c.NumLayers; l++)
            {
                _model.LoraDenseBlocks[l].RunWithBinding(_run, step.Step.Layers[l]);
            }
            _model.Head.RunWithBinding(_run, step.Step.Head!);
        }
        else if (groups > 0)
        {
            var bucket = 0;
            while (_model.LoraBuckets[bucket] < groups) bucket++;
            var step = _loraBindings[b, bucket] ??= new LoraBindings(new StepBindings(this, batch: b, seqLen: 1, slot: 0, withHead: true, bucket: bucket), _model.LoraBuckets[bucket], _c.NumLayers);
            step.Bind(this, groups, adaptedRows);
            var blocks = _model.LoraBlocks[bucket];
            for (var l = 0; l < _c.NumLayers; l++)
            {
                blocks[l].RunWithBinding(_run, step.Step.Layers[l]);
            }
            _model.Head.RunWithBinding(_run, step.Step.Head!);
        }
        else
        {
            var step = _decodeBindings[b] ??= new StepBindings(this, batch: b, seqLen: 1, slot: 0, withHead: true);
            for (var l = 0; l < _c.NumLayers; l++)
            {
                _model.Blocks[l].RunWithBinding(_run, step.Layers[l]);
            }
            _model.Head.RunWithBinding(_run, step.Head!);
        }
        for (var r = 0; r < b; r++)
        {
            var seq = _active[r];
            seq.Length++;
            seq.PendingToken = -1;
        }
        return _logits.Span[..(b * _c.VocabSize)];
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
        foreach (var b in _loraBindings) b?.Step.Dispose();
        foreach (var b in _denseBindings) b?.Step.Dispose();
        foreach (var v in _loraIndexViews) v?.Dispose();
        foreach (var v in _loraSizeViews) v.Dispose();
        Adapters?.Dispose();
        _run.Dispose();
    }

    /// <summary>
    /// Groups the first <paramref name="b"/> rows by adapter slot: fills the index buffer (row indices, grouped in
    /// order of first appearance), the size buffer and <c>_groupSlots</c>; returns (groups, adapted rows). Allocates nothing.
    /// </summary>
    private (int Groups, int AdaptedRows) GroupRowsByAdapter(int b)
    {
        var groups = 0;
        for (var r = 0; r < b; r++)
        {
            var slot = _active[r].AdapterSlot;
            if (slot < 0) continue;
            if (_groupOfSlot[slot] < 0)
            {
                _groupOfSlot[slot] = groups;
                _groupSlots[groups] = slot;
                _groupOffsets[groups] = 0;
                groups++;
            }
            _groupOffsets[_groupOfSlot[slot]]++;
        }
        if (groups == 0) return (0, 0);
        // counts -> start offsets
        var total = 0;
        var sizes = _loraSizes!.Span;
        for (var g = 0; g < groups; g++)
        {
            var n = _groupOffsets[g];
            sizes[g] = n;
            _groupOffsets[g] = total;
            total += n;
        }
        var index = _loraIndex!.Span;
        for (var r = 0; r < b; r++)
        {
            var slot = _active[r].AdapterSlot;
            if (slot < 0) continue;
            var at = _groupOffsets[_groupOfSlot[slot]]++;
            index[2 * at] = r;
            index[2 * at + 1] = 0;
        }
        for (var g = 0; g < groups; g++) _groupOfSlot[_groupSlots[g]] = -1;
        return (groups, total);
    }

    private OrtValue LoraIndexView(int na) => _loraIndexViews[na] ??= _loraIndex!.View(0, na, 2);

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

        public StepBindings(BatchDecoder dec, int batch, int seqLen, int slot, bool withHead = false, bool fused = false, int bucket = -1)
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
            for (var l = 0; l < c.NumLayers; l++)
            {
                var unit = bucket switch
                {
                    DenseVariant => dec._model.LoraDenseBlocks[l],
                    < 0 => dec._model.Blocks[l],
                    _ => dec._model.LoraBlocks[bucket][l],
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

        /// <summary>Binds a batch-1 prefill whose tokens all use <paramref name="slot"/> (the all-one-adapter variant).</summary>
        public void BindPrefillAdapter(BatchDecoder dec, int slot)
        {
            var table = dec.Adapters!;
            for (var l = 0; l < Layers.Length; l++)
            {
                for (var p = 0; p < AdapterFactors.ProjectionCount; p++)
                {
                    var projection = (AdaptedProjection)p;
                    Layers[l].BindInput(LoraNames.A[p][0], table.A(slot, l, projection));
                    Layers[l].BindInput(LoraNames.B[p][0], table.B(slot, l, projection));
                }
            }
        }

        public void Dispose()
        {
            for (var i = _owned.Count - 1; i >= 0; i--) _owned[i].Dispose();
        }

        private T Own<T>(T item) where T : IDisposable
        {
            _owned.Add(item);
            return item;
        }
    }

    /// <summary>
    /// The bindings of one (batch size, group bucket) adapter step, and what is bound now: adapter inputs are rebound
    /// only when the step's grouping differs from the last one that used these bindings (a new row count, another slot
    /// in a group, or a slot rewritten since), so steady decoding binds nothing and allocates nothing.
    /// </summary>
    private sealed class LoraBindings(StepBindings step, int groups, int layers, bool dense = false)
    {
        private readonly int[] _slots = new int[groups];
        private readonly long[] _versions = new long[groups];
        private int _boundRows = -1;
        private int _boundGroups = -1;

        public StepBindings Step { get; } = step;

        public void Bind(BatchDecoder dec, int used, int adaptedRows)
        {
            var table = dec.Adapters!;
            var sizes = dec._loraSizes!.Span;
            for (var g = used; g < groups; g++) sizes[g] = 0;
            if (!dense && adaptedRows != _boundRows)
            {
                var index = dec.LoraIndexView(adaptedRows);
                var bucketIndex = Array.IndexOf(dec._model.LoraBuckets, groups);
                for (var l = 0; l < layers; l++)
                {
                    Step.Layers[l].BindInput(BlockGraph.LoraIndex, index);
                    Step.Layers[l].BindInput(BlockGraph.LoraSizes, dec._loraSizeViews[bucketIndex]);
                }
                _boundRows = adaptedRows;
            }
            for (var g = 0; g < groups; g++)
            {
                var slot = g < used ? dec._groupSlots[g] : -1;
                var version = slot < 0 ? -1 : table.Version(slot);
                if (_boundGroups >= 0 && _slots[g] == slot && _versions[g] == version) continue;
                for (var l = 0; l < layers; l++)
                {
                    var io = Step.Layers[l];
                    for (var p = 0; p < AdapterFactors.ProjectionCount; p++)
                    {
                        var projection = (AdaptedProjection)p;
                        io.BindInput(LoraNames.A[p][g], slot < 0 ? table.EmptyA(projection) : table.A(slot, l, projection));
                        io.BindInput(LoraNames.B[p][g], slot < 0 ? table.EmptyB(projection) : table.B(slot, l, projection));
                    }
                }
                _slots[g] = slot;
                _versions[g] = version;
            }
            _boundGroups = used;
        }
    }

    /// <summary>Input names of the adapter groups, built once (binding by name must not allocate per step).</summary>
    private static class LoraNames
    {
        public static readonly string[][] A = Build(a: true);
        public static readonly string[][] B = Build(a: false);

        private static string[][] Build(bool a)
        {
            var names = new string[AdapterFactors.ProjectionCount][];
            for (var p = 0; p < names.Length; p++)
            {
                names[p] = new string[256];
                for (var g = 0; g < 256; g++) names[p][g] = BlockGraph.LoraInput((AdaptedProjection)p, g, a);
            }
            return names;
        }
    }
}
