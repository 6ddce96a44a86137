using Microsoft.ML.OnnxRuntime;
using Serving.Inference.Adapters;
using Serving.Inference.Graphs;
using Serving.Inference.Runtime;

namespace Serving.Inference.Engine;

/// <summary>
/// Runs blocks on packed steps: N tokens of any rows at any positions, through the packed block variants whose
/// attention reads and writes the whole cache by plan (<see cref="Attention.SlotAttentionOp"/>), and the per-layer
/// K/V-only units of state propagation. The caller fills the token inputs (the decoder's hidden buffer of the layer,
/// <see cref="DecoderBuffers.Positions"/>) and the plans: <see cref="KvPlan"/> (rows: slot, start, first token, count)
/// and, with adapters, <see cref="LoraPlan"/> (the segmented operator's layout over the packed tokens). Bindings are
/// built once per token count and reused: a step binds and allocates nothing.
/// </summary>
internal sealed class PackedSteps : IDisposable
{
    private readonly DecoderBuffers _buf;
    private readonly AdapterSlotTable? _table;
    private readonly RunOptions _run;
    private readonly StepBindings?[] _blocks;
    private readonly StepBindings?[] _adapterBlocks;
    private readonly StepBindings?[] _kvOnly;
    private readonly StepBindings?[] _adapterKvOnly;
    private readonly int _kvWidth;

    public PackedSteps(DecoderBuffers buf, AdapterSlotTable? table, int capacity, RunOptions run)
    {
        _buf = buf;
        _table = table;
        _run = run;
        var c = buf.Config;
        var tokens = buf.MaxTokensPerStep;
        _kvWidth = c.NumKvHeads * c.HeadDim;
        KvPlan = new NativeBuffer<long>(1 + 4L * Math.Max(capacity, tokens));
        if (table is not null)
        {
            LoraPlan = new NativeBuffer<long>(1 + 3L * table.Count + tokens);
            KvLoraPlan = new NativeBuffer<long>(1 + 3L * table.Count + tokens);
        }
        Ffn = new NativeBuffer<float>((long)tokens * c.IntermediateSize);
        KvHidden = new NativeBuffer<float>((long)tokens * c.HiddenSize);
        KvPositions = new NativeBuffer<long>(tokens);
        Keys = new NativeBuffer<float>((long)tokens * _kvWidth);
        Values = new NativeBuffer<float>((long)tokens * _kvWidth);
        _blocks = new StepBindings?[tokens + 1];
        _adapterBlocks = new StepBindings?[tokens + 1];
        _kvOnly = new StepBindings?[tokens + 1];
        _adapterKvOnly = new StepBindings?[tokens + 1];
    }

    /// <summary>Attention plan: R, then R × (slot, start position, first packed token, token count).</summary>
    public NativeBuffer<long> KvPlan { get; }

    /// <summary>The segmented operator's plan over the packed tokens (null without adapter slots).</summary>
    public NativeBuffer<long>? LoraPlan { get; }

    /// <summary>The K/V-only units' segmented plan over their tokens.</summary>
    public NativeBuffer<long>? KvLoraPlan { get; }

    /// <summary>The last block run's feed-forward activations [N, ffn].</summary>
    public NativeBuffer<float> Ffn { get; }

    /// <summary>K/V-only inputs: hidden states [m, d] and positions [m] of the tokens whose K/V are propagated.</summary>
    public NativeBuffer<float> KvHidden { get; }
    public NativeBuffer<long> KvPositions { get; }

    /// <summary>K/V-only outputs [m, KV·hd] (keys with RoPE applied).</summary>
    public NativeBuffer<float> Keys { get; }
    public NativeBuffer<float> Values { get; }

    /// <summary>Runs packed block <paramref name="layer"/> on the first <paramref name="tokens"/> tokens (input: the layer's hidden buffer).</summary>
    public void RunBlock(int layer, int tokens, bool adapters)
    {
        var cache = adapters ? _adapterBlocks : _blocks;
        var step = cache[tokens] ??= BindBlocks(tokens, adapters);
        step.Units[layer].RunWithBinding(_run, step.Layers[layer]);
    }

    /// <summary>Runs K/V-only unit <paramref name="layer"/> on <paramref name="tokens"/> tokens of <see cref="KvHidden"/>; the K/V land in <see cref="Keys"/>/<see cref="Values"/>.</summary>
    public void RunKvOnly(int layer, int tokens, bool adapters)
    {
        var cache = adapters ? _adapterKvOnly : _kvOnly;
        var step = cache[tokens] ??= BindKvOnly(tokens, adapters);
        step.Units[layer].RunWithBinding(_run, step.Layers[layer]);
    }

    /// <summary>Writes propagated K/V of token i (from <see cref="Keys"/>/<see cref="Values"/>) into layer <paramref name="layer"/>'s cache at (slot, position).</summary>
    public void Store(int layer, int token, int slot, int position)
    {
        var kv = _buf.Kv;
        var c = _buf.Config;
        var hd = c.HeadDim;
        for (var h = 0; h < c.NumKvHeads; h++)
        {
            var offset = slot * kv.SlotStride + ((long)h * kv.MaxContext + position) * hd;
            Keys.Span.Slice(token * _kvWidth + h * hd, hd).CopyTo(kv.Keys[layer].Span.Slice((int)offset, hd));
            Values.Span.Slice(token * _kvWidth + h * hd, hd).CopyTo(kv.Values[layer].Span.Slice((int)offset, hd));
        }
    }

    private StepBindings BindBlocks(int tokens, bool adapters)
    {
        var model = _buf.Model;
        var c = _buf.Config;
        var units = adapters ? model.PackedSegmentedBlocks : model.PackedBlocks;
        var step = StepBindings.Empty(c.NumLayers, units);
        var a = step.Own(_buf.HiddenA.View(0, 1, tokens, c.HiddenSize));
        var b = step.Own(_buf.HiddenB.View(0, 1, tokens, c.HiddenSize));
        var positions = step.Own(_buf.Positions.View(0, 1, tokens));
        var plan = step.Own(KvPlan.View(0, KvPlan.Length));
        var ffn = step.Own(Ffn.View(0, 1, tokens, c.IntermediateSize));
        var cacheShape = new long[] { _buf.Kv.Slots, c.NumKvHeads, model.MaxContext, c.HeadDim };
        OrtValue? loraPlan = adapters ? step.Own(LoraPlan!.View(0, 1 + 3L * _table!.Count + tokens)) : null;
        for (var l = 0; l < c.NumLayers; l++)
        {
            var io = step.Own(units[l].CreateIoBinding());
            io.BindInput(BlockGraph.Hidden, l % 2 == 0 ? a : b);
            io.BindOutput(BlockGraph.HiddenOut, l % 2 == 0 ? b : a);
            io.BindOutput(BlockGraph.FfnActivations, ffn);
            io.BindInput(BlockGraph.KvPlan, plan);
            io.BindInput(BlockGraph.KCache, step.Own(_buf.Kv.Keys[l].View(0, cacheShape)));
            io.BindInput(BlockGraph.VCache, step.Own(_buf.Kv.Values[l].View(0, cacheShape)));
            if (_buf.Rotary) io.BindInput(BlockGraph.PositionIds, positions);
            if (adapters) BindAdapters(io, l, loraPlan!, qkvOnly: false);
            step.Layers[l] = io;
        }
        return step;
    }

    private StepBindings BindKvOnly(int tokens, bool adapters)
    {
        var model = _buf.Model;
        var c = _buf.Config;
        var units = adapters ? model.KvOnlySegmentedBlocks : model.KvOnlyBlocks;
        var step = StepBindings.Empty(c.NumLayers, units);
        var hidden = step.Own(KvHidden.View(0, 1, tokens, c.HiddenSize));
        var positions = step.Own(KvPositions.View(0, 1, tokens));
        var keys = step.Own(Keys.View(0, 1, tokens, _kvWidth));
        var values = step.Own(Values.View(0, 1, tokens, _kvWidth));
        OrtValue? loraPlan = adapters ? step.Own(KvLoraPlan!.View(0, 1 + 3L * _table!.Count + tokens)) : null;
        for (var l = 0; l < c.NumLayers; l++)
        {
            var io = step.Own(units[l].CreateIoBinding());
            io.BindInput(BlockGraph.Hidden, hidden);
            io.BindOutput(KvOnlyGraph.Key, keys);
            io.BindOutput(KvOnlyGraph.Value, values);
            if (_buf.Rotary) io.BindInput(BlockGraph.PositionIds, positions);
            if (adapters) BindAdapters(io, l, loraPlan!, qkvOnly: true);
            step.Layers[l] = io;
        }
        return step;
    }

    private void BindAdapters(OrtIoBinding io, int layer, OrtValue plan, bool qkvOnly)
    {
        var table = _table!;
        io.BindInput(BlockGraph.LoraPlan, plan);
        for (var p = 0; p < (qkvOnly ? 1 : AdapterFactors.ProjectionCount); p++)
        {
            var projection = (AdaptedProjection)p;
            io.BindInput(LoraInputNames.A[p], table.StackedA(layer, projection, table.Count));
            io.BindInput(LoraInputNames.B[p], table.StackedB(layer, projection, table.Count));
            io.BindInput(LoraInputNames.Ranks[p], table.Ranks(layer, projection));
        }
    }

    public void Dispose()
    {
        foreach (var b in _blocks) b?.Dispose();
        foreach (var b in _adapterBlocks) b?.Dispose();
        foreach (var b in _kvOnly) b?.Dispose();
        foreach (var b in _adapterKvOnly) b?.Dispose();
    }
}
