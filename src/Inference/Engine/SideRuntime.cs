using Microsoft.ML.OnnxRuntime;
using Serving.Inference.Graphs;
using Serving.Inference.KvCache;
using Serving.Inference.Rewards;
using Serving.Inference.Runtime;

namespace Serving.Inference.Engine;

/// <summary>
/// One decoder's state for one Otter side network of L side layers (one per base layer, or on a subset of them): the
/// side network's own K/V cache, laid out [slot · L + side layer, heads, max_ctx, head_dim] (the decoder's slots, each
/// with its L layers side by side, so that a decode step's (row, layer) pairs are one contiguous batch; copied with the
/// decoder's slot on fork and release), two side-stream buffers the prefill's side layers alternate between, the
/// inputs of the base layers the side layers read during a decode step ([L, batch, d]) and bindings per decode batch size.
/// <list type="bullet">
/// <item>Prefill: zero the stream (s₀ = 0, <see cref="Begin"/>), then, at base layer l, l's side layer if it has one
/// (<see cref="Run"/>) on the block input the base step holds before block l overwrites it.</item>
/// <item>Decode: <see cref="Capture"/> the input of each base layer that has a side layer as the step goes, then every
/// side layer in one batched call (<see cref="RunDecode"/>).</item>
/// </list>
/// Callers pass base layer indices; a base layer without a side layer is a no-op.
/// Both leave s_L in <see cref="Final"/>. Decode bindings are built once per batch size; a step allocates nothing.
/// </summary>
internal sealed class SideRuntime : IDisposable
{
    private readonly DecoderBuffers _buf;
    private readonly RunOptions _run;
    private readonly StepBindings?[] _decode;
    private readonly int _layers;     // side layers
    private readonly int[] _sideLayer; // base layer → its side layer's index, −1 for none
    private readonly NativeBuffer<float> _inputs;

    public SideRuntime(OtterNetwork network, DecoderBuffers buf, int capacity, RunOptions run)
    {
        Network = network;
        _buf = buf;
        _run = run;
        var def = network.Definition;
        _layers = def.Layers.Count;
        _sideLayer = new int[buf.Config.NumLayers];
        Array.Fill(_sideLayer, -1);
        for (var i = 0; i < _layers; i++) _sideLayer[def.Layers[i].Layer] = i;
        Kv = new KvCachePool(1, capacity * _layers, def.NumHeads, buf.Model.MaxContext, def.HeadDim);
        SideA = new NativeBuffer<float>((long)buf.MaxTokensPerStep * def.SideSize);
        SideB = new NativeBuffer<float>((long)buf.MaxTokensPerStep * def.SideSize);
        _inputs = new NativeBuffer<float>((long)_layers * capacity * buf.Config.HiddenSize);
        _decode = new StepBindings?[capacity + 1];
    }

    public OtterNetwork Network { get; }

    /// <summary>The side K/V cache (one pool "layer" of slot · L + side layer entries).</summary>
    public KvCachePool Kv { get; }

    private NativeBuffer<float> SideA { get; }
    private NativeBuffer<float> SideB { get; }

    /// <summary>The side stream after the last layer, [tokens, side].</summary>
    public NativeBuffer<float> Final => _layers % 2 == 0 ? SideA : SideB;

    /// <summary>Copies the side cache of decoder slot <paramref name="from"/> into slot <paramref name="to"/> (first <paramref name="length"/> positions, every layer).</summary>
    public void CopySlot(int from, int to, int length)
    {
        for (var l = 0; l < _layers; l++) Kv.CopySlot(from * _layers + l, to * _layers + l, length);
    }

    /// <summary>Bindings for a prefill of <paramref name="tokens"/> tokens of the row in KV slot <paramref name="slot"/> (the caller disposes them).</summary>
    public StepBindings Prefill(int slot, int tokens) => BindLayers(tokens, slot);

    /// <summary>s₀ = 0 for the step's <paramref name="tokens"/> positions.</summary>
    public void Begin(int tokens) => SideA.Span[..(tokens * Network.SideSize)].Clear();

    /// <summary>Runs the side layer of base layer <paramref name="layer"/> of a prefill, if it has one (its base block's input is in the decoder's buffer of that layer).</summary>
    public void Run(int layer, StepBindings bindings)
    {
        var i = _sideLayer[layer];
        if (i >= 0) Network.Layers[i].RunWithBinding(_run, bindings.Layers[i]);
    }

    /// <summary>Keeps base layer <paramref name="layer"/>'s input for a decode step of <paramref name="batch"/> rows, if a side layer reads it.</summary>
    public void Capture(int layer, NativeBuffer<float> input, int batch)
    {
        var i = _sideLayer[layer];
        if (i < 0) return;
        var n = batch * _buf.Config.HiddenSize;
        input.Span[..n].CopyTo(_inputs.Span.Slice(i * n, n));
    }

    /// <summary>Every side layer of a decode step of <paramref name="batch"/> rows on the captured inputs, in one session call.</summary>
    public void RunDecode(int batch)
    {
        var bindings = _decode[batch] ??= BindStacked(batch);
        Network.Stacked.RunWithBinding(_run, bindings.Head!);
    }

    /// <summary>The stacked side network over views of the captured inputs, the side caches of slots [0, batch) and <see cref="Final"/>.</summary>
    private StepBindings BindStacked(int batch)
    {
        var def = Network.Definition;
        var pairs = batch * _layers;
        var b = StepBindings.Empty(0);
        var io = b.Own(Network.Stacked.CreateIoBinding());
        var kvShape = new long[] { pairs, def.NumHeads, _buf.Model.MaxContext, def.HeadDim };
        var key = b.Own(Kv.Keys[0].View(0, kvShape));
        var value = b.Own(Kv.Values[0].View(0, kvShape));
        io.BindInput(SideGraph.Inputs, b.Own(_inputs.View(0, _layers, batch, _buf.Config.HiddenSize)));
        io.BindInput(SideGraph.PositionIds, b.Own(_buf.Positions.View(0, batch)));
        io.BindInput(BlockGraph.PastKey, key);
        io.BindInput(BlockGraph.PastValue, value);
        io.BindOutput(SideGraph.SideOut, b.Own(Final.View(0, batch, def.SideSize)));
        b.Head = io;
        return b;
    }

    /// <summary>Per-layer bindings for a prefill of <paramref name="seqLen"/> tokens of one row in decoder slot <paramref name="slot"/>.</summary>
    private StepBindings BindLayers(int seqLen, int slot)
    {
        var def = Network.Definition;
        var c = _buf.Config;
        var b = StepBindings.Empty(_layers);
        var kvShape = new long[] { 1, def.NumHeads, _buf.Model.MaxContext, def.HeadDim };
        var sideA = b.Own(SideA.View(0, 1, seqLen, def.SideSize));
        var sideB = b.Own(SideB.View(0, 1, seqLen, def.SideSize));
        var hiddenA = b.Own(_buf.HiddenA.View(0, 1, seqLen, c.HiddenSize));
        var hiddenB = b.Own(_buf.HiddenB.View(0, 1, seqLen, c.HiddenSize));
        var seqLens = b.Own(_buf.SeqLens.View(0, 1));
        var total = b.Own(_buf.Total.View(0));
        var positions = b.Own(_buf.Positions.View(0, 1, seqLen));
        for (var l = 0; l < _layers; l++)
        {
            var io = b.Own(Network.Layers[l].CreateIoBinding());
            var key = b.Own(Kv.Keys[0].View((slot * _layers + l) * Kv.SlotStride, kvShape));
            var value = b.Own(Kv.Values[0].View((slot * _layers + l) * Kv.SlotStride, kvShape));
            // The base block's input alternates with the base layer's index (DecoderBuffers.Input), the side stream with the side layer's.
            io.BindInput(BlockGraph.Hidden, def.Layers[l].Layer % 2 == 0 ? hiddenA : hiddenB);
            io.BindInput(SideGraph.Side, l % 2 == 0 ? sideA : sideB);
            io.BindOutput(SideGraph.SideOut, l % 2 == 0 ? sideB : sideA);
            io.BindInput(BlockGraph.PastKey, key);
            io.BindInput(BlockGraph.PastValue, value);
            io.BindOutput(BlockGraph.PresentKey, key);
            io.BindOutput(BlockGraph.PresentValue, value);
            io.BindInput(BlockGraph.SeqLensK, seqLens);
            io.BindInput(BlockGraph.TotalSeqLen, total);
            if (_buf.Rotary) io.BindInput(BlockGraph.PositionIds, positions);
            b.Layers[l] = io;
        }
        return b;
    }

    public void Dispose()
    {
        foreach (var b in _decode) b?.Dispose();
    }
}
