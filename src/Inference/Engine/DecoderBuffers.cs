using Serving.Checkpoints;
using Serving.Inference.KvCache;
using Serving.Inference.Runtime;

namespace Serving.Inference.Engine;

/// <summary>
/// The fixed native buffers one <see cref="BatchDecoder"/> binds its units to, allocated once: two hidden-state
/// buffers that the layers alternate between, positions, per-row sequence lengths, the total length, the logits and
/// the KV cache. Shared by the decoder, its step bindings and its adapter kernel.
/// </summary>
internal sealed class DecoderBuffers
{
    public DecoderBuffers(DecoderModel model, int capacity)
    {
        Model = model;
        Config = model.Config;
        var c = Config;
        Kv = new KvCachePool(c.NumLayers, capacity, c.NumKvHeads, model.MaxContext, c.HeadDim, half: model.Options.Precision == ComputePrecision.Float16);
        var rows = Math.Max(Math.Max(capacity, model.MaxContext), model.Options.MaxStepTokens);
        HiddenA = new NativeBuffer<float>((long)rows * c.HiddenSize);
        HiddenB = new NativeBuffer<float>((long)rows * c.HiddenSize);
        Positions = new NativeBuffer<long>(rows);
        SeqLens = new NativeBuffer<int>(capacity);
        Total = new NativeBuffer<int>(1);
        Logits = new NativeBuffer<float>((long)capacity * c.VocabSize);
        Rotary = c.Architecture == ModelArchitecture.Llama;
        MaxTokensPerStep = rows;
    }

    public DecoderModel Model { get; }
    public ModelConfig Config { get; }
    public KvCachePool Kv { get; }
    public NativeBuffer<float> HiddenA { get; }
    public NativeBuffer<float> HiddenB { get; }
    public NativeBuffer<long> Positions { get; }
    public NativeBuffer<int> SeqLens { get; }
    public NativeBuffer<int> Total { get; }
    public NativeBuffer<float> Logits { get; }

    /// <summary>Rotary models take position ids as a block input.</summary>
    public bool Rotary { get; }

    /// <summary>Most tokens one step holds (a decode's rows or a prefill's prompt tokens).</summary>
    public int MaxTokensPerStep { get; }

    /// <summary>The buffer layer <paramref name="layer"/> reads (the embedding output for layer 0).</summary>
    public NativeBuffer<float> Input(int layer) => layer % 2 == 0 ? HiddenA : HiddenB;

    /// <summary>The buffer layer <paramref name="layer"/> writes.</summary>
    public NativeBuffer<float> Output(int layer) => layer % 2 == 0 ? HiddenB : HiddenA;
}
