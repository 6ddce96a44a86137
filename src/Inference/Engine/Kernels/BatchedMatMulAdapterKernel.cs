using Microsoft.ML.OnnxRuntime;
using Serving.Inference.Adapters;
using Serving.Inference.Graphs;
using Serving.Inference.Runtime;

namespace Serving.Inference.Engine.Kernels;

/// <summary>
/// Adapters with stock ONNX operators (for CUDA, or <c>AdapterKernel = BatchedMatMul</c>): a step whose every row uses
/// one adapter runs the one-adapter variant at that adapter's own rank; a mixed step compacts its slots to block
/// positions [0, G) and runs one batched MatMul per projection side over a [G, T] grid of the groups' tokens (rank
/// capacity, zero-padded). Bindings are cached per batch size and rebound only when the slot, its content or (G, T)
/// changes, so steady decoding binds and allocates nothing.
/// </summary>
internal sealed class BatchedMatMulAdapterKernel : IAdapterKernel
{
    private readonly DecoderBuffers _buf;
    private readonly AdapterSlotTable _table;
    private readonly NativeBuffer<long> _index;        // [G, T, 2]: (row, position) of each group's tokens, padded
    private readonly NativeBuffer<float> _mask;        // [G, T, 1]: 1 real, 0 padding
    private readonly NativeBuffer<long> _tokens;       // [batch, 1, 2]: (group, entry) of each row's update
    private readonly OrtValue?[,] _indexViews;         // [G - 1, T - 1]
    private readonly OrtValue?[,] _maskViews;
    private readonly MixedBindings?[] _mixed;          // [batch]
    private readonly OneAdapterBindings?[] _oneAdapter; // [batch]
    private readonly Dictionary<(int Groups, int T, int Batch), CopyPlan> _uploads = []; // on a device: the grid and tokens sent per step

    public BatchedMatMulAdapterKernel(DecoderBuffers buf, AdapterSlotTable table, int capacity)
    {
        _buf = buf;
        _table = table;
        var slots = table.Count;
        var grid = (long)slots * (capacity + 1); // T can exceed the largest group by one padding column
        _index = new NativeBuffer<long>(2 * grid);
        _mask = new NativeBuffer<float>(grid);
        _tokens = new NativeBuffer<long>(2L * capacity);
        _indexViews = new OrtValue?[slots, capacity + 1];
        _maskViews = new OrtValue?[slots, capacity + 1];
        _mixed = new MixedBindings?[capacity + 1];
        _oneAdapter = new OneAdapterBindings?[capacity + 1];
        buf.Mirror(_index);
        buf.Mirror(_mask);
        buf.Mirror(_tokens);
    }

    public StepBindings BindPrefill(int kvSlot, int adapterSlot, int tokens)
    {
        var step = new StepBindings(_buf, batch: 1, seqLen: tokens, slot: kvSlot, BlockVariant.OneAdapter);
        step.BindOneAdapter(_table, adapterSlot);
        return step;
    }

    public StepBindings BindDecode(int batch, AdapterGroups groups, IReadOnlyList<Sequence> active, out AdapterStepCost cost)
    {
        if (groups.Count == 1 && groups.AdaptedRows == batch)
        {
            // Every row on one adapter: the variant without gather/scatter, at the adapter's own rank.
            var slot = groups.Slots[0];
            cost = new AdapterStepCost(_table[slot]!.Bytes, 0);
            var one = _oneAdapter[batch] ??= new OneAdapterBindings(new StepBindings(_buf, batch, seqLen: 1, slot: 0, BlockVariant.OneAdapter, withHead: true));
            one.Bind(_table, slot);
            return one.Step;
        }
        var t = LayOutGroups(batch, groups, active);
        cost = new AdapterStepCost(groups.Count * _table.SlotBytes, groups.Count * t);
        var mixed = _mixed[batch] ??= new MixedBindings(this, new StepBindings(_buf, batch, seqLen: 1, slot: 0, BlockVariant.Batched, withHead: true), batch);
        mixed.Bind(this, groups.Count, t);
        Upload(groups.Count, t, batch);
        return mixed.Step;
    }

    /// <summary>On a device, sends the step's grid (index, mask) and rows' (group, entry) to the device copies the layers bind; no allocation once the shape was seen.</summary>
    private void Upload(int groups, int t, int batch)
    {
        if (_buf.Device is not { } device) return;
        if (!_uploads.TryGetValue((groups, t, batch), out var plan))
        {
            plan = new CopyPlan(device, [_buf.UploadPair(_index, 2L * groups * t), _buf.UploadPair(_mask, (long)groups * t), _buf.UploadPair(_tokens, 2L * batch)]);
            _uploads[(groups, t, batch)] = plan;
        }
        device.Run(plan);
    }

    /// <summary>
    /// Compacts the step's slots to block positions [0, G) and fills the [G, T] grid (index, mask) and each row's
    /// (group, entry); returns T. Rows without an adapter read a padding entry, whose update the mask zeroes (T grows by
    /// one when the grid would have none). Allocates nothing.
    /// </summary>
    private int LayOutGroups(int b, AdapterGroups groups, IReadOnlyList<Sequence> active)
    {
        var count = groups.Count;
        _table.Compact(groups.Slots.AsSpan(0, count));
        var t = 0;
        for (var g = 0; g < count; g++) t = Math.Max(t, groups.Fill[g]);
        if (count * t == groups.AdaptedRows && groups.AdaptedRows < b) t++;
        var index = _index.Span[..(2 * count * t)];
        var mask = _mask.Span[..(count * t)];
        index.Clear(); // padding gathers (row 0, position 0): any valid token
        mask.Clear();
        var fill = groups.Fill;
        Array.Clear(fill, 0, count); // now: entries filled per block position
        var tokens = _tokens.Span;
        for (var r = 0; r < b; r++)
        {
            var slot = active[r].AdapterSlot;
            if (slot < 0) continue;
            var g = _table.PositionOf(slot);
            var e = g * t + fill[g]++;
            index[2 * e] = r;
            mask[e] = 1f;
            tokens[2 * r] = g;
            tokens[2 * r + 1] = e - g * t;
        }
        if (groups.AdaptedRows < b)
        {
            var pad = 0;
            while (fill[pad] == t) pad++;
            for (var r = 0; r < b; r++)
            {
                if (active[r].AdapterSlot >= 0) continue;
                tokens[2 * r] = pad;
                tokens[2 * r + 1] = t - 1;
            }
        }
        return t;
    }

    public void Dispose()
    {
        foreach (var b in _mixed) b?.Step.Dispose();
        foreach (var b in _oneAdapter) b?.Step.Dispose();
        foreach (var v in _indexViews) v?.Dispose();
        foreach (var v in _maskViews) v?.Dispose();
        foreach (var p in _uploads.Values) p.Dispose();
    }

    /// <summary>A batch size's one-adapter step and which slot content is bound (rebound only when the slot or its version changes).</summary>
    private sealed class OneAdapterBindings(StepBindings step)
    {
        private int _slot = -1;
        private long _version = -1;

        public StepBindings Step { get; } = step;

        public void Bind(AdapterSlotTable table, int slot)
        {
            var version = table.Version(slot);
            if (_slot == slot && _version == version) return;
            Step.BindOneAdapter(table, slot);
            _slot = slot;
            _version = version;
        }
    }

    /// <summary>
    /// A batch size's mixed-adapter step. The stacked A/B views start at block 0 whatever slots the step uses, so they
    /// are rebound only when G changes, and the grid views when (G, T) changes; a slot written or moved since needs no
    /// rebinding.
    /// </summary>
    private sealed class MixedBindings
    {
        private int _groups = -1;
        private int _t = -1;

        public MixedBindings(BatchedMatMulAdapterKernel kernel, StepBindings step, int batch)
        {
            Step = step;
            var tokens = step.Own(kernel._buf.Bound(kernel._tokens, 0, batch, 1, 2));
            foreach (var io in step.Layers) io.BindInput(BlockGraph.LoraTokens, tokens);
        }

        public StepBindings Step { get; }

        public void Bind(BatchedMatMulAdapterKernel kernel, int groups, int t)
        {
            if (groups == _groups && t == _t) return;
            var index = kernel._indexViews[groups - 1, t - 1] ??= kernel._buf.Bound(kernel._index, 0, groups, t, 2);
            var mask = kernel._maskViews[groups - 1, t - 1] ??= kernel._buf.Bound(kernel._mask, 0, groups, t, 1);
            var table = kernel._table;
            for (var l = 0; l < Step.Layers.Length; l++)
            {
                var io = Step.Layers[l];
                io.BindInput(BlockGraph.LoraIndex, index);
                io.BindInput(BlockGraph.LoraMask, mask);
                if (groups == _groups) continue;
                for (var p = 0; p < AdapterFactors.ProjectionCount; p++)
                {
                    var projection = (AdaptedProjection)p;
                    io.BindInput(LoraInputNames.A[p], table.StackedA(l, projection, groups));
                    io.BindInput(LoraInputNames.B[p], table.StackedB(l, projection, groups));
                }
            }
            _groups = groups;
            _t = t;
        }
    }
}
