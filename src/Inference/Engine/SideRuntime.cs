using Microsoft.ML.OnnxRuntime;
using Serving.Inference.Graphs;
using Serving.Inference.KvCache;
using Serving.Inference.Rewards;
using Serving.Inference.Runtime;

namespace Serving.Inference.Engine;

/// <summary>
/// One decoder's state for one Otter side network: the side network's own K/V cache (same slot layout as the
/// decoder's, copied with it on fork and release), two side-stream buffers the side layers alternate between, and
/// bindings per decode batch size. A step zeroes the stream (s₀ = 0), runs side layer l on the block inputs the base
/// step already holds, and leaves s_L in <see cref="Final"/>. Decode bindings are built once per batch size.
/// </summary>
internal sealed class SideRuntime : IDisposable
{
    private readonly DecoderBuffers _buf;
    private readonly RunOptions _run;
    private readonly StepBindings?[] _decode;
    private readonly int _layers;

    public SideRuntime(OtterNetwork network, DecoderBuffers buf, int capacity, RunOptions run)
    {
        Network = network;
        _buf = buf;
        _run = run;
        var def = network.Definition;
        _layers = buf.Config.NumLayers;
        Kv = new KvCachePool(_layers, capacity, def.NumHeads, buf.Model.MaxContext, def.HeadDim);
        SideA = new NativeBuffer<float>((long)buf.MaxTokensPerStep * def.SideSize);
        SideB = new NativeBuffer<float>((long)buf.MaxTokensPerStep * def.SideSize);
        _decode = new StepBindings?[capacity + 1];
    }

    public OtterNetwork Network { get; }

    public KvCachePool Kv { get; }

    private NativeBuffer<float> SideA { get; }
    private NativeBuffer<float> SideB { get; }

    /// <summary>The side stream after the last layer, [tokens, side].</summary>
    public NativeBuffer<float> Final => _layers % 2 == 0 ? SideA : SideB;

    /// <summary>Bindings for a decode step of <paramref name="batch"/> rows (cached).</summary>
    public StepBindings Decode(int batch) => _decode[batch] ??= Bind(batch, 1, 0);

    /// <summary>Bindings for a prefill of <paramref name="tokens"/> tokens of the row in KV slot <paramref name="slot"/> (the caller disposes them).</summary>
    public StepBindings Prefill(int slot, int tokens) => Bind(1, tokens, slot);

    /// <summary>s₀ = 0 for the step's <paramref name="tokens"/> positions.</summary>
    public void Begin(int tokens) => SideA.Span[..(tokens * Network.SideSize)].Clear();

    /// <summary>Runs side layer <paramref name="layer"/> (its base block's input is in the decoder's buffer of that layer).</summary>
    public void Run(int layer, StepBindings bindings) => Network.Layers[layer].RunWithBinding(_run, bindings.Layers[layer]);

    private StepBindings Bind(int batch, int seqLen, int slot)
    {
        var def = Network.Definition;
        var c = _buf.Config;
        var b = StepBindings.Empty(_layers);
        var kvShape = new long[] { batch, def.NumHeads, _buf.Model.MaxContext, def.HeadDim };
        var sideA = b.Own(SideA.View(0, batch, seqLen, def.SideSize));
        var sideB = b.Own(SideB.View(0, batch, seqLen, def.SideSize));
        var hiddenA = b.Own(_buf.HiddenA.View(0, batch, seqLen, c.HiddenSize));
        var hiddenB = b.Own(_buf.HiddenB.View(0, batch, seqLen, c.HiddenSize));
        var seqLens = b.Own(_buf.SeqLens.View(0, batch));
        var total = b.Own(_buf.Total.View(0));
        var positions = b.Own(_buf.Positions.View(0, batch, seqLen));
        for (var l = 0; l < _layers; l++)
        {
            var io = b.Own(Network.Layers[l].CreateIoBinding());
            var key = b.Own(Kv.Keys[l].View(slot * Kv.SlotStride, kvShape));
            var value = b.Own(Kv.Values[l].View(slot * Kv.SlotStride, kvShape));
            io.BindInput(BlockGraph.Hidden, l % 2 == 0 ? hiddenA : hiddenB);
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
