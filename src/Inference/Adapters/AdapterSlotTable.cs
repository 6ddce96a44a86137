using Microsoft.ML.OnnxRuntime;
using Serving.Checkpoints;
using Serving.Inference.Runtime;

namespace Serving.Inference.Adapters;

/// <summary>
/// Slot storage for adapters: S slots, each holding one adapter's A and B for every layer and projection, in buffers
/// that ONNX Runtime reads in place (tensor views, no copies at step time). Activating an adapter copies its factors
/// into a slot (<see cref="Write"/>): no session is rebuilt and no base weight changes.
/// <para>
/// Layout: per (layer, projection) one stacked buffer for A <c>[S, R, in]</c> and one for B <c>[S, R, out]</c>, R the
/// rank capacity (<see cref="RuntimeOptions.AdapterMaxRank"/>, times the fused parts for Llama's q|k|v and gate|up).
/// A rank-r adapter fills the first r rows of its block and the rest stays zero, so mixed ranks share a batch. A slot
/// is a logical number (what the scheduler assigns) mapped to a physical block position; <see cref="Compact"/> swaps
/// blocks so that the slots a step uses are the positions [0, G), and a step then binds <c>[G, R, ·]</c> views from
/// offset 0 (<see cref="StackedA"/>): one batched MatMul per projection side, whatever G is. One-adapter steps and
/// prefills bind exact-rank views of one slot (<see cref="A"/>, <see cref="B"/>) and pay nothing for padding.
/// </para>
/// Not thread-safe: the decoder's owner writes slots between steps.
/// </summary>
public sealed class AdapterSlotTable : IDisposable
{
    private const int P = AdapterFactors.ProjectionCount;
    private readonly ModelConfig _c;
    private readonly Slot[] _slots;          // by logical slot
    private readonly int[] _physical;        // logical -> physical position
    private readonly int[] _logical;         // physical position -> logical
    private readonly (int In, int Out)[] _shapes = new (int, int)[P];
    private readonly int[] _rankCapacity = new int[P];
    private readonly NativeBuffer<float>[] _a; // [layer * P + p]: [S, R_p, in_p]
    private readonly NativeBuffer<float>[] _b; // [layer * P + p]: [S, R_p, out_p]
    private readonly OrtValue?[][] _stackedA; // [layer * P + p][G - 1]: view [G, R_p, in_p] from position 0
    private readonly OrtValue?[][] _stackedB;
    private readonly NativeBuffer<long>[] _ranks; // [layer * P + p]: [S], rank by physical position (segmented operator)
    private readonly OrtValue?[] _rankViews;
    private readonly float[] _scratch;
    private readonly NativeBuffer<float> _empty = new(1);
    private readonly OrtValue[] _emptyA = new OrtValue[P];
    private readonly OrtValue[] _emptyB = new OrtValue[P];
    private readonly DeviceMemory? _device;
    private readonly DeviceBuffer<float>[] _deviceA = []; // the device copies of _a and _b (CUDA), bound instead of them
    private readonly DeviceBuffer<float>[] _deviceB = [];
    private readonly CopyPlan?[] _uploads = []; // by block position: every unit's A and B block, host → device

    /// <summary>Creates <paramref name="slots"/> empty slots for adapters of <paramref name="config"/>, up to rank <paramref name="maxRank"/> per module.</summary>
    public AdapterSlotTable(ModelConfig config, int slots, int maxRank)
        : this(config, slots, maxRank, device: null)
    {
    }

    /// <summary>
    /// Slots whose factors sessions read from <paramref name="device"/> memory: the host blocks stay the copy that
    /// writes, clears and swaps edit, and every block position they touch is sent to the device in one copier run (the
    /// whole block at the slot's rank capacity), so a step binds device memory and copies nothing.
    /// </summary>
    internal AdapterSlotTable(ModelConfig config, int slots, int maxRank, DeviceMemory? device)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(slots);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxRank, 1);
        _c = config;
        MaxRank = maxRank;
        _slots = new Slot[slots];
        _physical = new int[slots];
        _logical = new int[slots];
        for (var s = 0; s < slots; s++)
        {
            _slots[s] = new Slot(config.NumLayers);
            _physical[s] = _logical[s] = s;
        }
        // Separate q/k/v (gate/up) modules stack their ranks in the fused projection; Phi-3's fused modules do not.
        var llama = config.Architecture == ModelArchitecture.Llama && !config.FusedProjections;
        var scratch = 0;
        for (var p = 0; p < P; p++)
        {
            var projection = (AdaptedProjection)p;
            _shapes[p] = AdapterFactors.Shape(config, projection);
            var parts = llama ? projection switch { AdaptedProjection.Qkv => 3, AdaptedProjection.Up => 2, _ => 1 } : 1;
            _rankCapacity[p] = maxRank * parts;
            _emptyA[p] = _empty.View(0, 0, _shapes[p].In);
            _emptyB[p] = _empty.View(0, 0, _shapes[p].Out);
            scratch = Math.Max(scratch, _rankCapacity[p] * Math.Max(_shapes[p].In, _shapes[p].Out));
            SlotBytes += 4L * config.NumLayers * _rankCapacity[p] * (_shapes[p].In + _shapes[p].Out);
        }
        _scratch = new float[scratch];
        var units = config.NumLayers * P;
        _a = new NativeBuffer<float>[units];
        _b = new NativeBuffer<float>[units];
        _stackedA = new OrtValue?[units][];
        _stackedB = new OrtValue?[units][];
        _ranks = new NativeBuffer<long>[units];
        _rankViews = new OrtValue?[units];
        for (var i = 0; i < units; i++)
        {
            var (inDim, outDim) = _shapes[i % P];
            var r = _rankCapacity[i % P];
            // Zeroed at allocation: rows past an adapter's rank must read as zero. Cleared once more on purpose: the
            // runtime takes large arrays from fresh, untouched pages, and the first write to each page then faults;
            // touching them here moves that cost (~10 ms per rank-16 gpt2-small adapter on a VM) from the first
            // activations of every slot to start-up, where slot memory is reserved anyway.
            _a[i] = new NativeBuffer<float>(Math.Max(1L, (long)slots * r * inDim));
            _b[i] = new NativeBuffer<float>(Math.Max(1L, (long)slots * r * outDim));
            _a[i].Span.Clear();
            _b[i].Span.Clear();
            _stackedA[i] = new OrtValue?[slots];
            _stackedB[i] = new OrtValue?[slots];
            _ranks[i] = new NativeBuffer<long>(Math.Max(1, slots));
        }
        if (device is null) return;
        _device = device;
        _deviceA = _a.Select(a => device.Allocate<float>(a.Length)).ToArray();
        _deviceB = _b.Select(b => device.Allocate<float>(b.Length)).ToArray();
        _uploads = new CopyPlan?[slots];
    }

    /// <summary>Sends every unit's A and B block at <paramref name="position"/> to the device copy (no allocation once the position was sent before).</summary>
    private void Upload(int position)
    {
        if (_device is null) return;
        var plan = _uploads[position];
        if (plan is null)
        {
            var pairs = new List<(OrtValue, OrtValue)>(2 * _a.Length);
            for (var i = 0; i < _a.Length; i++)
            {
                var p = i % P;
                long sizeA = (long)_rankCapacity[p] * _shapes[p].In, sizeB = (long)_rankCapacity[p] * _shapes[p].Out;
                pairs.Add((_a[i].Bytes(position * sizeA, sizeA), _deviceA[i].Bytes(position * sizeA, sizeA)));
                pairs.Add((_b[i].Bytes(position * sizeB, sizeB), _deviceB[i].Bytes(position * sizeB, sizeB)));
            }
            plan = _uploads[position] = new CopyPlan(_device, pairs);
        }
        _device.Run(plan);
    }

    /// <summary>A tensor view of unit <paramref name="unit"/>'s buffer (A or B), on the device when the table has a device copy.</summary>
    private OrtValue Bound(int unit, bool a, long offset, params long[] shape) => _device is null
        ? (a ? _a : _b)[unit].View(offset, shape)
        : (a ? _deviceA : _deviceB)[unit].View(offset, shape);

    /// <summary>Number of slots (S).</summary>
    public int Count => _slots.Length;

    /// <summary>Largest rank per module a slot accepts.</summary>
    public int MaxRank { get; }

    /// <summary>Bytes of one slot at full rank capacity: what a batched step reads per adapter it mixes.</summary>
    public long SlotBytes { get; }

    /// <summary>Bytes of slot storage (S × <see cref="SlotBytes"/>, reserved when the table is created).</summary>
    public long AllocatedBytes => Count * SlotBytes;

    /// <summary>Block swaps <see cref="Compact"/> has made (each copies two slots' factors through a scratch block).</summary>
    public long Swaps { get; private set; }

    /// <summary>Time those swaps took.</summary>
    public TimeSpan SwapTime => System.Diagnostics.Stopwatch.GetElapsedTime(0, _swapTicks);

    private long _swapTicks;

    /// <summary>The adapter in a slot (null when empty).</summary>
    public AdapterFactors? this[int slot] => _slots[slot].Factors;

    /// <summary>The physical block position of a logical slot (group index of a compacted step).</summary>
    internal int PositionOf(int slot) => _physical[slot];

    /// <summary>Changes whenever the slot's content or position changes (bindings compare it to know when to rebind).</summary>
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
        var pos = _physical[slot];
        for (var l = 0; l < _c.NumLayers; l++)
        {
            for (var p = 0; p < P; p++)
            {
                var i = l * P + p;
                var u = adapter.Get(l, (AdaptedProjection)p);
                var rank = u?.Rank ?? 0;
                var a = Block(_a[i], i, pos, _shapes[p].In);
                var b = Block(_b[i], i, pos, _shapes[p].Out);
                if (u is not null)
                {
                    u.A.CopyTo(a);
                    u.B.CopyTo(b);
                }
                // Rows past the rank stay zero (a batched step multiplies the whole capacity): clear what the
                // previous, larger adapter left there.
                if (rank < s.Ranks[i])
                {
                    a[(rank * _shapes[p].In)..(s.Ranks[i] * _shapes[p].In)].Clear();
                    b[(rank * _shapes[p].Out)..(s.Ranks[i] * _shapes[p].Out)].Clear();
                }
                s.Ranks[i] = rank;
                _ranks[i].Span[pos] = rank;
            }
        }
        Upload(pos);
        s.Factors = adapter;
        s.Version++;
    }

    /// <summary>Empties a slot (its block is zeroed so a batched step that spans it adds nothing).</summary>
    public void Clear(int slot)
    {
        var s = _slots[slot];
        s.DisposeViews();
        var pos = _physical[slot];
        for (var i = 0; i < _a.Length; i++)
        {
            if (s.Ranks[i] == 0) continue;
            Block(_a[i], i, pos, _shapes[i % P].In)[..(s.Ranks[i] * _shapes[i % P].In)].Clear();
            Block(_b[i], i, pos, _shapes[i % P].Out)[..(s.Ranks[i] * _shapes[i % P].Out)].Clear();
        }
        Array.Clear(s.Ranks);
        foreach (var ranks in _ranks) ranks.Span[pos] = 0;
        Upload(pos);
        s.Factors = null;
        s.Version++;
    }

    /// <summary>
    /// Moves the <paramref name="count"/> slots listed in <paramref name="slots"/> (distinct) to the block positions
    /// [0, count) by swapping blocks with slots outside the list; slots already there stay. Afterwards
    /// <see cref="PositionOf"/> of each listed slot is below <paramref name="count"/>. Slot numbers and contents do not
    /// change, only where they live. Allocates nothing.
    /// </summary>
    public void Compact(ReadOnlySpan<int> slots)
    {
        var count = slots.Length;
        var free = 0; // next position < count to test for an occupant outside the list
        foreach (var slot in slots)
        {
            if (_physical[slot] < count) continue;
            // Find a position in [0, count) whose occupant is not listed.
            while (true)
            {
                var occupant = _logical[free];
                if (!slots.Contains(occupant)) break;
                free++;
            }
            Swap(slot, _logical[free]);
            free++;
        }
    }

    private void Swap(int x, int y)
    {
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        int px = _physical[x], py = _physical[y];
        var sx = _slots[x];
        var sy = _slots[y];
        for (var i = 0; i < _a.Length; i++)
        {
            var p = i % P;
            var rows = Math.Max(sx.Ranks[i], sy.Ranks[i]); // rows past both ranks are zero in both blocks
            if (rows == 0) continue;
            SwapRows(Block(_a[i], i, px, _shapes[p].In), Block(_a[i], i, py, _shapes[p].In), rows * _shapes[p].In);
            SwapRows(Block(_b[i], i, px, _shapes[p].Out), Block(_b[i], i, py, _shapes[p].Out), rows * _shapes[p].Out);
            var ranks = _ranks[i].Span;
            (ranks[px], ranks[py]) = (ranks[py], ranks[px]);
        }
        Upload(px);
        Upload(py);
        (_physical[x], _physical[y]) = (py, px);
        _logical[px] = y;
        _logical[py] = x;
        sx.DisposeViews();
        sy.DisposeViews();
        sx.Version++;
        sy.Version++;
        Swaps++;
        _swapTicks += System.Diagnostics.Stopwatch.GetTimestamp() - started;
    }

    private void SwapRows(Span<float> x, Span<float> y, int n)
    {
        var t = _scratch.AsSpan(0, n);
        x[..n].CopyTo(t);
        y[..n].CopyTo(x);
        t.CopyTo(y);
    }

    private Span<float> Block(NativeBuffer<float> buffer, int unit, int position, int width)
    {
        var size = _rankCapacity[unit % P] * width;
        return buffer.Span.Slice(position * size, size);
    }

    /// <summary>The exact-rank view of A [r, in] of a slot (an empty [0, in] when the projection is not adapted).</summary>
    internal OrtValue A(int slot, int layer, AdaptedProjection p) => View(slot, layer, p, a: true);

    /// <summary>The exact-rank view of B [r, out] of a slot (an empty [0, out]).</summary>
    internal OrtValue B(int slot, int layer, AdaptedProjection p) => View(slot, layer, p, a: false);

    private OrtValue View(int slot, int layer, AdaptedProjection p, bool a)
    {
        var s = _slots[slot];
        var i = layer * P + (int)p;
        var rank = s.Ranks[i];
        if (rank == 0) return a ? _emptyA[(int)p] : _emptyB[(int)p];
        var views = a ? s.AView : s.BView;
        if (views[i] is { } v) return v;
        var width = a ? _shapes[(int)p].In : _shapes[(int)p].Out;
        var offset = (long)_physical[slot] * _rankCapacity[(int)p] * width;
        return views[i] = Bound(i, a, offset, rank, width);
    }

    /// <summary>View [G, R, in] of the A blocks at positions [0, G) (after <see cref="Compact"/>); cached, never rebound.</summary>
    internal OrtValue StackedA(int layer, AdaptedProjection p, int groups)
    {
        var i = layer * P + (int)p;
        return _stackedA[i][groups - 1] ??= Bound(i, a: true, 0, groups, _rankCapacity[(int)p], _shapes[(int)p].In);
    }

    /// <summary>View [G, R, out] of the B blocks at positions [0, G).</summary>
    internal OrtValue StackedB(int layer, AdaptedProjection p, int groups)
    {
        var i = layer * P + (int)p;
        return _stackedB[i][groups - 1] ??= Bound(i, a: false, 0, groups, _rankCapacity[(int)p], _shapes[(int)p].Out);
    }

    /// <summary>View int64 [S] of the ranks of (layer, projection) by block position (0 for an empty slot).</summary>
    internal OrtValue Ranks(int layer, AdaptedProjection p)
    {
        var i = layer * P + (int)p;
        return _rankViews[i] ??= _ranks[i].View(0, Count);
    }

    public void Dispose()
    {
        foreach (var v in _rankViews) v?.Dispose();
        foreach (var s in _slots) s.DisposeViews();
        foreach (var views in _stackedA) foreach (var v in views) v?.Dispose();
        foreach (var views in _stackedB) foreach (var v in views) v?.Dispose();
        foreach (var v in _emptyA) v.Dispose();
        foreach (var v in _emptyB) v.Dispose();
        foreach (var u in _uploads) u?.Dispose();
        foreach (var d in _deviceA) d.Dispose();
        foreach (var d in _deviceB) d.Dispose();
    }

    private sealed class Slot(int layers)
    {
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
