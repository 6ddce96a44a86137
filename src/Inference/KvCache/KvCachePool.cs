using Serving.Inference.Runtime;

namespace Serving.Inference.KvCache;

/// <summary>
/// Pre-allocated key/value storage: per layer one K and one V buffer laid out [slot, kv_head, max_context, head_dim],
/// the layout <c>GroupQueryAttention</c> reads as past and writes as present (the same buffer, updated in place).
/// A contiguous range of slots is one batch.
/// </summary>
internal sealed class KvCachePool
{
    public KvCachePool(int layers, int slots, int kvHeads, int maxContext, int headDim)
    {
        Layers = layers;
        Slots = slots;
        KvHeads = kvHeads;
        MaxContext = maxContext;
        HeadDim = headDim;
        SlotStride = (long)kvHeads * maxContext * headDim;
        Keys = new NativeBuffer<float>[layers];
        Values = new NativeBuffer<float>[layers];
        for (var l = 0; l < layers; l++)
        {
            Keys[l] = new NativeBuffer<float>(SlotStride * slots);
            Values[l] = new NativeBuffer<float>(SlotStride * slots);
        }
    }

    public int Layers { get; }
    public int Slots { get; }
    public int KvHeads { get; }
    public int MaxContext { get; }
    public int HeadDim { get; }
    public long SlotStride { get; }
    public NativeBuffer<float>[] Keys { get; }
    public NativeBuffer<float>[] Values { get; }

    /// <summary>Bytes held by the pool.</summary>
    public long Bytes => 2L * Layers * Slots * SlotStride * sizeof(float);

    /// <summary>Copies the first <paramref name="length"/> positions of slot <paramref name="from"/> into slot <paramref name="to"/>, every layer.</summary>
    public void CopySlot(int from, int to, int length)
    {
        if (from == to || length == 0) return;
        var run = length * HeadDim;
        for (var l = 0; l < Layers; l++)
        {
            CopyHeads(Keys[l].Span, from, to, run);
            CopyHeads(Values[l].Span, from, to, run);
        }
    }

    private void CopyHeads(Span<float> span, int from, int to, int run)
    {
        for (var h = 0; h < KvHeads; h++)
        {
            var head = (long)h * MaxContext * HeadDim;
            span.Slice((int)(from * SlotStride + head), run).CopyTo(span.Slice((int)(to * SlotStride + head), run));
        }
    }
}
