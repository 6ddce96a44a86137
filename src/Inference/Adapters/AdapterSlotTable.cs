using Microsoft.ML.OnnxRuntime;
using Serving.Checkpoints;
using Serving.Inference.Runtime;

namespace Serving.Inference.Adapters;

/// <summary>
/// Slot storage for adapters: S slots, each holding one adapter's A and B for every layer and projection in buffers
/// that ONNX Runtime reads in place (tensor views, no copies at step time). Activating an adapter copies its factors
/// into a slot (<see cref="Write"/>): no session is rebuilt and no base weight changes. A slot's buffers grow only when
/// a larger adapter arrives, so steady-state swaps allocate nothing. Ranks differ freely between slots: a step binds
/// each group's own [in, r] / [r, out] views, so nothing is padded. Not thread-safe: the decoder's owner writes slots
/// between steps.
/// </summary>
public sealed class AdapterSlotTable : IDisposable
{
    private const int P = AdapterFactors.ProjectionCount;
    private readonly ModelConfig _c;
    private readonly Slot[] _slots;
    private readonly (int In, int Out)[] _shapes = new (int, int)[P];
    private readonly int[] _rankCapacity = new int[P];
    private readonly NativeBuffer<float> _empty = new(1);
    private readonly OrtValue[] _emptyA = new OrtValue[P];
    private readonly OrtValue[] _emptyB = new OrtValue[P];

    /// <summary>Creates <paramref name="slots"/> empty slots for adapters of <paramref name="config"/>.</summary>
    public AdapterSlotTable(ModelConfig config, int slots, int maxRank)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(slots);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxRank, 1);
        _c = config;
        MaxRank = maxRank;
        _slots = new Slot[slots];
        for (var s = 0; s < slots; s++) _slots[s] = new Slot(config.NumLayers);
        var llama = config.Architecture == ModelArchitecture.Llama;
        for (var p = 0; p < P; p++)
        {
            var projection = (AdaptedProjection)p;
            _shapes[p] = AdapterFactors.Shape(config, projection);
            var parts = llama ? projection switch { AdaptedProjection.Qkv => 3, AdaptedProjection.Up => 2, _ => 1 } : 1;
            _rankCapacity[p] = maxRank * parts;
            _emptyA[p] = _empty.View(0, _shapes[p].In, 0);
            _emptyB[p] = _empty.View(0, 0, _shapes[p].Out);
        }
    }

    /// <summary>Number of slots (S).</summary>
    public int Count => _slots.Length;

    /// <summary>Largest rank per module a slot accepts.</summary>
    public int MaxRank { get; }

    /// <summary>Bytes of slot buffers currently allocated.</summary>
    public long AllocatedBytes
    {
        get
        {
            long total = 0;
            foreach (var s in _slots)
            {
                for (var i = 0; i < s.A.Length; i++) total += 4L * ((s.A[i]?.Length ?? 0) + (s.B[i]?.Length ?? 0));
            }
            return total;
        }
    }

    /// <summary>The adapter in a slot (null when empty).</summary>
    public AdapterFactors? this[int slot] => _slots[slot].Factors;

    /// <summary>Changes whenever the slot's content changes (bindings compare it to know when to rebind).</summary>
    internal long Version(int slot) => _slots[slot].Version;

    /// <summary>Throws <see cref="ArgumentException"/> when <paramref name="adapter"/> cannot go into a slot of this table.</summary>
    public void EnsureFits(AdapterFactors adapter)
    {
        ArgumentNullException.ThrowIfNull(adapter);
        if (adapter.Layers != _c.NumLayers)
        {
            throw new ArgumentException($"the adapter has {adapter.Layers} layers; the base model has {_c.NumLayers}", nameof(adapter));
        }
        for (var l = 0; l < _c.NumLayers; l++)
        {
            for (var p = 0; p < P; p++)
            {
                if (adapter.Get(l, (AdaptedProjection)p) is { } u && u.Rank > _rankCapacity[p])
                {
                    throw new ArgumentException(
                        $"layer {l} {(AdaptedProjection)p}: rank {u.Rank} exceeds the slot capacity {_rankCapacity[p]} (AdapterMaxRank {MaxRank} per module)",
                        nameof(adapter));
                }
            }
        }
    }

    /// <summary>Copies <paramref name="adapter"/> into <paramref name="slot"/>, replacing what was there (hot swap).</summary>
    public void Write(int slot, AdapterFactors adapter)
    {
        EnsureFits(adapter);
        var s = _slots[slot];
        s.DisposeViews();
        for (var l = 0; l < _c.NumLayers; l++)
        {
            for (var p = 0; p < P; p++)
            {
                var i = l * P + p;
                var (inDim, outDim) = _shapes[p];
                if (adapter.Get(l, (AdaptedProjection)p) is not { } u)
                {
                    s.Ranks[i] = 0;
                    continue;
                }
                if (s.A[i] is null || s.A[i]!.Length < u.A.Length) s.A[i] = new NativeBuffer<float>(u.A.Length);
                if (s.B[i] is null || s.B[i]!.Length < u.B.Length) s.B[i] = new NativeBuffer<float>(u.B.Length);
                u.A.CopyTo(s.A[i]!.Span);
                u.B.CopyTo(s.B[i]!.Span);
                s.Ranks[i] = u.Rank;
                s.AView[i] = s.A[i]!.View(0, inDim, u.Rank);
                s.BView[i] = s.B[i]!.View(0, u.Rank, outDim);
            }
        }
        s.Factors = adapter;
        s.Version++;
    }

    /// <summary>Empties a slot (its buffers are kept for the next adapter).</summary>
    public void Clear(int slot)
    {
        var s = _slots[slot];
        s.DisposeViews();
        Array.Clear(s.Ranks);
        s.Factors = null;
        s.Version++;
    }

    /// <summary>The view of A [in, r] (or an empty [in, 0] when the projection is not adapted) of a slot.</summary>
    internal OrtValue A(int slot, int layer, AdaptedProjection p) => _slots[slot].AView[layer * P + (int)p] ?? _emptyA[(int)p];

    /// <summary>The view of B [r, out] (or an empty [0, out]) of a slot.</summary>
    internal OrtValue B(int slot, int layer, AdaptedProjection p) => _slots[slot].BView[layer * P + (int)p] ?? _emptyB[(int)p];

    /// <summary>An empty A view for padding groups.</summary>
    internal OrtValue EmptyA(AdaptedProjection p) => _emptyA[(int)p];

    /// <summary>An empty B view for padding groups.</summary>
    internal OrtValue EmptyB(AdaptedProjection p) => _emptyB[(int)p];

    public void Dispose()
    {
        foreach (var s in _slots) s.DisposeViews();
        foreach (var v in _emptyA) v.Dispose();
        foreach (var v in _emptyB) v.Dispose();
    }

    private sealed class Slot(int layers)
    {
        public NativeBuffer<float>?[] A { get; } = new NativeBuffer<float>?[layers * P];
        public NativeBuffer<float>?[] B { get; } = new NativeBuffer<float>?[layers * P];
        public OrtValue?[] AView { get; } = new OrtValue?[layers * P];
        public OrtValue?[] BView { get; } = new OrtValue?[layers * P];
        public int[] Ranks { get; } = new int[layers * P];
        public AdapterFactors? Factors { get; set; }
        public long Version { get; set; }

        public void DisposeViews()
        {
            for (var i = 0; i < AView.Length; i++)
            {
                AView[i]?.Dispose();
                BView[i]?.Dispose();
                AView[i] = null;
                BView[i] = null;
            }
        }
    }
}
