using Microsoft.ML.OnnxRuntime;
using Serving.Inference.Adapters;
using Serving.Inference.Graphs;

namespace Serving.Inference.Engine;

/// <summary>The block sessions a step runs: the base blocks, or one of their adapter variants.</summary>
internal enum BlockVariant
{
    /// <summary>The plain base block.</summary>
    Base,

    /// <summary>Every token on one adapter (<see cref="BlockGraph.AllTokensOneAdapter"/>).</summary>
    OneAdapter,

    /// <summary>Batched groups of adapters (<see cref="BlockGraph.BatchedGroups"/>).</summary>
    Batched,

    /// <summary>The segmented operator (<see cref="BlockGraph.Segmented"/>).</summary>
    Segmented,
}

/// <summary>
/// IO bindings of every unit for one step shape (batch × tokens per row) over views of a decoder's fixed buffers:
/// each layer reads one hidden buffer and writes the other, past and present K/V are the same cache views (updated in
/// place). Built once per shape and reused, so a step binds nothing; owns (and disposes) every view it creates.
/// </summary>
internal sealed class StepBindings : IDisposable
{
    private readonly List<IDisposable> _owned = [];

    public StepBindings(DecoderBuffers buf, int batch, int seqLen, int slot, BlockVariant variant = BlockVariant.Base, bool withHead = false)
    {
        var c = buf.Config;
        var model = buf.Model;
        long d = c.HiddenSize;
        var kvShape = new long[] { batch, c.NumKvHeads, model.MaxContext, c.HeadDim };
        var a = Own(buf.Bound(buf.HiddenA, 0, batch, seqLen, d));
        var b = Own(buf.Bound(buf.HiddenB, 0, batch, seqLen, d));
        var seqLens = Own(buf.Bound(buf.SeqLens, 0, batch));
        var total = Own(buf.Total.View(0));
        var positions = Own(buf.Bound(buf.Positions, 0, batch, seqLen));
        var units = model.BlocksOf(variant);
        Units = units;
        Layers = new OrtIoBinding[c.NumLayers];
        for (var l = 0; l < c.NumLayers; l++)
        {
            var io = Own(units[l].CreateIoBinding());
            var key = Own(buf.Kv.View(l, key: true, slot * buf.Kv.SlotStride, kvShape));
            var value = Own(buf.Kv.View(l, key: false, slot * buf.Kv.SlotStride, kvShape));
            io.BindInput(BlockGraph.Hidden, l % 2 == 0 ? a : b);
            io.BindOutput(BlockGraph.HiddenOut, l % 2 == 0 ? b : a);
            io.BindInput(BlockGraph.PastKey, key);
            io.BindInput(BlockGraph.PastValue, value);
            io.BindOutput(BlockGraph.PresentKey, key);
            io.BindOutput(BlockGraph.PresentValue, value);
            io.BindInput(BlockGraph.SeqLensK, seqLens);
            io.BindInput(BlockGraph.TotalSeqLen, total);
            if (buf.Rotary) io.BindInput(BlockGraph.PositionIds, positions);
            Layers[l] = io;
        }
        if (withHead)
        {
            var final = buf.Output(c.NumLayers - 1);
            Head = Own(model.Head.CreateIoBinding());
            Head.BindInput(HeadGraph.Hidden, Own(buf.Bound(final, 0, batch * seqLen, d)));
            Head.BindOutput(HeadGraph.Logits, Own(buf.Logits.View(0, batch * seqLen, c.VocabSize)));
        }
    }

    /// <summary>Empty bindings for <paramref name="layers"/> units that a caller fills (side networks, packed steps).</summary>
    public static StepBindings Empty(int layers, InferenceSession[]? units = null) => new(layers, units ?? []);

    private StepBindings(int layers, InferenceSession[] units)
    {
        Layers = new OrtIoBinding[layers];
        Units = units;
    }

    /// <summary>
    /// A decode step of <paramref name="batch"/> rows through the fused blocks (one unit, <c>Layers[0]</c>): hidden A in,
    /// hidden B out (never the input buffer), every layer's K/V in place; the head reads hidden B.
    /// </summary>
    public static StepBindings Fused(DecoderBuffers buf, int batch) => new(buf, batch);

    private StepBindings(DecoderBuffers buf, int batch)
    {
        var c = buf.Config;
        var model = buf.Model;
        long d = c.HiddenSize;
        var kvShape = new long[] { batch, c.NumKvHeads, model.MaxContext, c.HeadDim };
        var io = Own(model.FusedBlocks!.CreateIoBinding());
        io.BindInput(BlockGraph.Hidden, Own(buf.Bound(buf.HiddenA, 0, batch, 1, d)));
        io.BindOutput(BlockGraph.HiddenOut, Own(buf.Bound(buf.HiddenB, 0, batch, 1, d)));
        io.BindInput(BlockGraph.SeqLensK, Own(buf.Bound(buf.SeqLens, 0, batch)));
        io.BindInput(BlockGraph.TotalSeqLen, Own(buf.Total.View(0)));
        if (buf.Rotary) io.BindInput(BlockGraph.PositionIds, Own(buf.Bound(buf.Positions, 0, batch, 1)));
        for (var l = 0; l < c.NumLayers; l++)
        {
            var key = Own(buf.Kv.View(l, key: true, 0, kvShape));
            var value = Own(buf.Kv.View(l, key: false, 0, kvShape));
            io.BindInput(FusedGraph.PastKey(l), key);
            io.BindInput(FusedGraph.PastValue(l), value);
            io.BindOutput(FusedGraph.PresentKey(l), key);
            io.BindOutput(FusedGraph.PresentValue(l), value);
        }
        Layers = [io];
        Units = [model.FusedBlocks];
        Head = Own(model.Head.CreateIoBinding());
        Head.BindInput(HeadGraph.Hidden, Own(buf.Bound(buf.HiddenB, 0, batch, d)));
        Head.BindOutput(HeadGraph.Logits, Own(buf.Logits.View(0, batch, c.VocabSize)));
    }

    /// <summary>Per layer, the block session these bindings are for.</summary>
    public InferenceSession[] Units { get; }

    /// <summary>Per layer, the block's bindings.</summary>
    public OrtIoBinding[] Layers { get; }

    /// <summary>The head's bindings (final hidden → logits).</summary>
    public OrtIoBinding? Head { get; set; }

    /// <summary>Binds one adapter's exact-rank A/B of slot <paramref name="slot"/> on every layer (the one-adapter variant).</summary>
    public void BindOneAdapter(AdapterSlotTable table, int slot)
    {
        for (var l = 0; l < Layers.Length; l++)
        {
            for (var p = 0; p < AdapterFactors.ProjectionCount; p++)
            {
                var projection = (AdaptedProjection)p;
                Layers[l].BindInput(LoraInputNames.A[p], table.A(slot, l, projection));
                Layers[l].BindInput(LoraInputNames.B[p], table.B(slot, l, projection));
            }
        }
    }

    public void Dispose()
    {
        for (var i = _owned.Count - 1; i >= 0; i--) _owned[i].Dispose();
    }

    /// <summary>Takes ownership of a view or binding (disposed with this object).</summary>
    public T Own<T>(T item) where T : IDisposable
    {
        _owned.Add(item);
        return item;
    }
}

/// <summary>Input names of the adapter factors per projection, built once (binding by name must not allocate per step).</summary>
internal static class LoraInputNames
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
