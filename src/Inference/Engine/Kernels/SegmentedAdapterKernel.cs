using Microsoft.ML.OnnxRuntime;
using Serving.Inference.Adapters;
using Serving.Inference.Graphs;
using Serving.Inference.Runtime;

namespace Serving.Inference.Engine.Kernels;

/// <summary>
/// Adapters through <see cref="SegmentedLoraOp"/> (CPU): one block variant serves prefills, one-adapter and mixed
/// steps. Every slot's A/B and ranks are bound once per step shape (fixed buffers the slot table updates in place);
/// each step only rewrites the plan: G segments of (block position, start, count) and the rows in segment order.
/// </summary>
internal sealed class SegmentedAdapterKernel : IAdapterKernel
{
    private readonly DecoderBuffers _buf;
    private readonly AdapterSlotTable _table;
    private readonly NativeBuffer<long> _plan;
    private readonly StepBindings?[] _decode;

    public SegmentedAdapterKernel(DecoderBuffers buf, AdapterSlotTable table, int capacity)
    {
        _buf = buf;
        _table = table;
        _plan = new NativeBuffer<long>(1 + 3L * table.Count + buf.MaxTokensPerStep);
        _decode = new StepBindings?[capacity + 1];
    }

    public StepBindings BindPrefill(int kvSlot, int adapterSlot, int tokens)
    {
        // Every token of a prefill uses the row's adapter: one segment.
        var plan = _plan.Span;
        plan[0] = 1;
        plan[1] = _table.PositionOf(adapterSlot);
        plan[2] = 0;
        plan[3] = tokens;
        var order = plan.Slice(4, tokens);
        for (var i = 0; i < tokens; i++) order[i] = i;
        return Bind(new StepBindings(_buf, batch: 1, seqLen: tokens, slot: kvSlot, BlockVariant.Segmented), tokens);
    }

    public StepBindings BindDecode(int batch, AdapterGroups groups, IReadOnlyList<Sequence> active, out AdapterStepCost cost)
    {
        cost = new AdapterStepCost(WriteDecodePlan(batch, groups, active), 0);
        return _decode[batch] ??= Bind(new StepBindings(_buf, batch, seqLen: 1, slot: 0, BlockVariant.Segmented, withHead: true), batch);
    }

    /// <summary>
    /// One segment per adapter, its rows contiguous in the order list (rows without an adapter are left out and keep the
    /// base output). Returns the adapter bytes the step reads (each adapter once, at its own rank). Allocates nothing.
    /// </summary>
    private long WriteDecodePlan(int b, AdapterGroups groups, IReadOnlyList<Sequence> active)
    {
        var plan = _plan.Span;
        var count = groups.Count;
        var order = plan[(1 + 3 * count)..];
        plan[0] = count;
        long bytes = 0;
        var start = 0;
        for (var g = 0; g < count; g++)
        {
            var slot = groups.Slots[g];
            plan[1 + 3 * g] = _table.PositionOf(slot);
            plan[2 + 3 * g] = start;
            plan[3 + 3 * g] = groups.Fill[g];
            bytes += _table[slot]!.Bytes;
            groups.SetGroupOfSlot(slot, g);
            groups.Fill[g] = start; // now: next entry of the segment
            start += (int)plan[3 + 3 * g];
        }
        for (var r = 0; r < b; r++)
        {
            var slot = active[r].AdapterSlot;
            if (slot >= 0) order[groups.Fill[groups.GroupOfSlot(slot)]++] = r;
        }
        groups.ClearGroupOfSlot();
        return bytes;
    }

    /// <summary>Binds every slot's A/B, the slot ranks and one plan view shared by every layer.</summary>
    private StepBindings Bind(StepBindings step, int tokens)
    {
        var plan = step.Own(_plan.View(0, 1 + 3L * _table.Count + tokens));
        for (var l = 0; l < step.Layers.Length; l++)
        {
            var io = step.Layers[l];
            io.BindInput(BlockGraph.LoraPlan, plan);
            for (var p = 0; p < AdapterFactors.ProjectionCount; p++)
            {
                var projection = (AdaptedProjection)p;
                io.BindInput(LoraInputNames.A[p], _table.StackedA(l, projection, _table.Count));
                io.BindInput(LoraInputNames.B[p], _table.StackedB(l, projection, _table.Count));
                io.BindInput(LoraInputNames.Ranks[p], _table.Ranks(l, projection));
            }
        }
        return step;
    }

    public void Dispose()
    {
        foreach (var b in _decode) b?.Dispose();
    }
}
