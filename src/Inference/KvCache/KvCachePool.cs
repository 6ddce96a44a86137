using Microsoft.ML.OnnxRuntime;
using Serving.Inference.Runtime;

namespace Serving.Inference.KvCache;

/// <summary>
/// Pre-allocated key/value storage: per layer one K and one V buffer laid out [slot, kv_head, max_context, head_dim],
/// the layout <c>GroupQueryAttention</c> reads as past and writes as present (the same buffer, updated in place).
/// A contiguous range of slots is one batch. fp32, or fp16 for fp16 blocks (<see cref="RuntimeOptions.Precision"/>):
/// then <see cref="Keys"/>/<see cref="Values"/> are empty and <see cref="HalfKeys"/>/<see cref="HalfValues"/> hold it.
/// </summary>
internal sealed class KvCachePool
{
    public KvCachePool(int layers, int slots, int kvHeads, int maxContext, int headDim, bool half = false)
    {
        Layers = layers;
        Slots = slots;
        KvHeads = kvHeads;
        MaxContext = maxContext;
        HeadDim = headDim;
        SlotStride = (long)kvHeads * maxContext * headDim;
        Half = half;
        Keys = new NativeBuffer<float>[half ? 0 : layers];
        Values = new NativeBuffer<float>[half ? 0 : layers];
        HalfKeys = new NativeBuffer<Float16>[half ? layers : 0];
        HalfValues = new NativeBuffer<Float16>[half ? layers : 0];
        for (var l = 0; l < layers; l++)
        {
            if (half)
            {
                HalfKeys[l] = new NativeBuffer<Float16>(SlotStride * slots);
                HalfValues[l] = new NativeBuffer<Float16>(SlotStride * slots);
                continue;
            }
            Keys[l] = new NativeBuffer<float>(SlotStride * slots);
            Values[l] = new NativeBuffer<float>(SlotStride * slots);
        }
    }

    /// <summary>Whether the cache is fp16.</summary>
    public bool Half { get; }

    public int Layers { get; }
    public int Slots { get; }
    public int KvHeads { get; }
    public int MaxContext { get; }
    public int HeadDim { get; }
    public long SlotStride { get; }
    public NativeBuffer<float>[] Keys { get; }
    public NativeBuffer<float>[] Values { get; }
    public NativeBuffer<Float16>[] HalfKeys { get; }
    public NativeBuffer<Float16>[] HalfValues { get; }

    /// <summary>A tensor view of layer <paramref name="layer"/>'s K (or V) cache from element <paramref name="offset"/>, in the pool's type. The caller owns it.</summary>
    public OrtValue View(int layer, bool key, long offset, long[] shape) => Half
        ? (key ? HalfKeys : HalfValues)[layer].View(offset, shape)
        : (key ? Keys : Values)[layer].View(offset, shape);

    /// <summary>Bytes held by the pool.</summary>
    public long Bytes => 2L * Layers * Slots * SlotStride * (Half ? 2 : sizeof(float));

    /// <summary>Copies the first <paramref name="length"/> positions of slot <paramref name="from"/> into slot <paramref name="to"/>, every layer.</summary>
    public void CopySlot(int from, int to, int length)
    {
        if (from == to || length == 0) return;
        var run = length * HeadDim;
        for (var l = 0; l < Layers; l++)
        {
            if (Half)
            {
                CopyHeads(HalfKeys[l].Span, from, to, run);
                CopyHeads(HalfValues[l].Span, from, to, run);
                continue;
            }
            CopyHeads(Keys[l].Span, from, to, run);
            CopyHeads(Values[l].Span, from, to, run);
        }
    }

    private void CopyHeads<T>(Span<T> span, int from, int to, int run)
    {
        for (var h = 0; h < KvHeads; h++)
        {
            var head = (long)h * MaxContext * HeadDim;
            span.Slice((int)(from * SlotStride + head), run).CopyTo(span.Slice((int)(to * SlotStride + head), run));
        }
    }
}
