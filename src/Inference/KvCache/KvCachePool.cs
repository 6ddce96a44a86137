using Microsoft.ML.OnnxRuntime;
using Serving.Inference.Runtime;

namespace Serving.Inference.KvCache;

/// <summary>
/// Pre-allocated key/value storage: per layer one K and one V buffer laid out [slot, kv_head, max_context, head_dim],
/// the layout <c>GroupQueryAttention</c> reads as past and writes as present (the same buffer, updated in place).
/// A contiguous range of slots is one batch. fp32, or fp16 for fp16 blocks (<see cref="RuntimeOptions.Precision"/>):
/// then <see cref="Keys"/>/<see cref="Values"/> are empty and <see cref="HalfKeys"/>/<see cref="HalfValues"/> hold it.
/// With <see cref="DeviceMemory"/> (CUDA) the cache lives on the device instead: the host arrays are all empty, sessions
/// bind <see cref="View"/>s of device memory, and <see cref="CopySlot"/> copies on the device.
/// </summary>
internal sealed class KvCachePool : IDisposable
{
    private readonly DeviceMemory? _device;
    private readonly DeviceBuffer<float>[] _deviceKeys = [];
    private readonly DeviceBuffer<float>[] _deviceValues = [];
    private readonly DeviceBuffer<Float16>[] _deviceHalfKeys = [];
    private readonly DeviceBuffer<Float16>[] _deviceHalfValues = [];

    public KvCachePool(int layers, int slots, int kvHeads, int maxContext, int headDim, bool half = false, DeviceMemory? device = null)
    {
        Layers = layers;
        Slots = slots;
        KvHeads = kvHeads;
        MaxContext = maxContext;
        HeadDim = headDim;
        SlotStride = (long)kvHeads * maxContext * headDim;
        Half = half;
        _device = device;
        if (device is not null)
        {
            Keys = Values = [];
            HalfKeys = HalfValues = [];
            if (half)
            {
                _deviceHalfKeys = Enumerable.Range(0, layers).Select(_ => device.Allocate<Float16>(SlotStride * slots)).ToArray();
                _deviceHalfValues = Enumerable.Range(0, layers).Select(_ => device.Allocate<Float16>(SlotStride * slots)).ToArray();
            }
            else
            {
                _deviceKeys = Enumerable.Range(0, layers).Select(_ => device.Allocate<float>(SlotStride * slots)).ToArray();
                _deviceValues = Enumerable.Range(0, layers).Select(_ => device.Allocate<float>(SlotStride * slots)).ToArray();
            }
            return;
        }
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
    public OrtValue View(int layer, bool key, long offset, long[] shape) => _device is not null
        ? Half ? (key ? _deviceHalfKeys : _deviceHalfValues)[layer].View(offset, shape) : (key ? _deviceKeys : _deviceValues)[layer].View(offset, shape)
        : Half ? (key ? HalfKeys : HalfValues)[layer].View(offset, shape) : (key ? Keys : Values)[layer].View(offset, shape);

    /// <summary>Whether the cache is in device memory (<see cref="View"/> is then the only way to it).</summary>
    public bool OnDevice => _device is not null;

    /// <summary>Bytes held by the pool.</summary>
    public long Bytes => 2L * Layers * Slots * SlotStride * (Half ? 2 : sizeof(float));

    /// <summary>Copies the first <paramref name="length"/> positions of slot <paramref name="from"/> into slot <paramref name="to"/>, every layer.</summary>
    /// <remarks>In device memory every layer's whole slot is copied in one copier run (positions past
    /// <paramref name="length"/> of <paramref name="to"/> are overwritten too; no caller keeps anything there).</remarks>
    public void CopySlot(int from, int to, int length)
    {
        if (from == to || length == 0) return;
        if (_device is not null)
        {
            CopySlotOnDevice(from, to);
            return;
        }
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

    private void CopySlotOnDevice(int from, int to)
    {
        var sources = new List<OrtValue>(2 * Layers);
        var targets = new List<OrtValue>(2 * Layers);
        try
        {
            for (var l = 0; l < Layers; l++)
            {
                foreach (var key in (ReadOnlySpan<bool>)[true, false])
                {
                    sources.Add(DeviceBytes(l, key, from * SlotStride, SlotStride));
                    targets.Add(DeviceBytes(l, key, to * SlotStride, SlotStride));
                }
            }
            _device!.CopyOnce(sources, targets);
        }
        finally
        {
            foreach (var v in sources) v.Dispose();
            foreach (var v in targets) v.Dispose();
        }
    }

    /// <summary>A byte view of <paramref name="count"/> elements of layer <paramref name="layer"/>'s device K (or V) cache from element <paramref name="offset"/>. The caller owns it.</summary>
    private OrtValue DeviceBytes(int layer, bool key, long offset, long count) => Half
        ? (key ? _deviceHalfKeys : _deviceHalfValues)[layer].Bytes(offset, count)
        : (key ? _deviceKeys : _deviceValues)[layer].Bytes(offset, count);

    /// <summary>Slot <paramref name="slot"/>'s K (or V) of layer <paramref name="layer"/>, [kv_head, max_context, head_dim] as fp32, read back from wherever the cache is (tests).</summary>
    public float[] ReadSlot(int layer, bool key, int slot)
    {
        var result = new float[SlotStride];
        var offset = slot * SlotStride;
        if (!Half)
        {
            var floats = _device is null ? (key ? Keys : Values)[layer].Span.Slice((int)offset, (int)SlotStride) : FromDevice<float>(layer, key, offset);
            floats.CopyTo(result);
            return result;
        }
        var halves = _device is null ? (key ? HalfKeys : HalfValues)[layer].Span.Slice((int)offset, (int)SlotStride) : FromDevice<Float16>(layer, key, offset);
        for (var i = 0; i < result.Length; i++) result[i] = (float)halves[i];
        return result;
    }

    /// <summary>A host copy of one slot's K (or V) of <paramref name="layer"/> from the device cache (elements as stored).</summary>
    private Span<T> FromDevice<T>(int layer, bool key, long offset) where T : unmanaged
    {
        var staging = new NativeBuffer<T>(SlotStride);
        using var from = DeviceBytes(layer, key, offset, SlotStride);
        using var to = staging.Bytes(0, SlotStride);
        _device!.CopyOnce([from], [to]);
        return staging.Span;
    }

    public void Dispose()
    {
        foreach (var b in _deviceKeys) b.Dispose();
        foreach (var b in _deviceValues) b.Dispose();
        foreach (var b in _deviceHalfKeys) b.Dispose();
        foreach (var b in _deviceHalfValues) b.Dispose();
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
