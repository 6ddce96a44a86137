using System.Buffers;
using Serving.Checkpoints;

namespace Serving.Inference.Adapters;

/// <summary>The four projections of a block that adapters can change, in the engine's fused layout.</summary>
public enum AdaptedProjection
{
    /// <summary>Fused q|k|v (GPT-2 <c>attn.c_attn</c>; Llama <c>q_proj</c>, <c>k_proj</c>, <c>v_proj</c>; Phi-3 <c>qkv_proj</c>).</summary>
    Qkv = 0,

    /// <summary>Attention output (GPT-2 <c>attn.c_proj</c>; Llama <c>o_proj</c>).</summary>
    Out = 1,

    /// <summary>First feed-forward projection (GPT-2 <c>mlp.c_fc</c>; Llama fused gate|up; Phi-3 <c>gate_up_proj</c>).</summary>
    Up = 2,

    /// <summary>Second feed-forward projection (GPT-2 <c>mlp.c_proj</c>; Llama <c>down_proj</c>).</summary>
    Down = 3,
}

/// <summary>
/// One adapted module in PEFT's orientation, as the adapter store decodes it: <c>ΔW = Scale · B · A</c> with A
/// row-major [r, in] and B row-major [out, r] (the logical <c>y = W x</c> orientation, also for GPT-2's Conv1D).
/// </summary>
/// <param name="Module">Layer-relative module name (<c>attn.c_attn</c>, <c>self_attn.q_proj</c>, <c>mlp.down_proj</c>, ...).</param>
public sealed record LoraModule(string Module, int Layer, int Rank, float Scale, float[] A, float[] B);

/// <summary>
/// One projection's low-rank update in engine orientation: <c>y += (x · Aᵀ) · B</c>, scale folded into B. A keeps
/// PEFT's [r, in] orientation (the graph multiplies by its transpose), so both factors have the rank as their outer
/// dimension: a slot holding a rank-r update inside a larger rank capacity stores it as the first r rows of each.
/// </summary>
/// <param name="Rank">Rows of A and B (for fused projections, the sum of the parts' ranks).</param>
/// <param name="A">Row-major [Rank, in].</param>
/// <param name="B">Row-major [Rank, out].</param>
public sealed record LowRankUpdate(int Rank, float[] A, float[] B);

/// <summary>
/// An adapter ready for a device slot: per layer and <see cref="AdaptedProjection"/>, a low-rank update in the engine's
/// orientation with the LoRA scale folded into B. Llama's separate q/k/v (and gate/up) modules become one update of
/// the fused projection: A stacked ([r_q + r_k + r_v, in]) and B block-diagonal, so <c>(x·Aᵀ)·B</c> equals the sum
/// of the parts' updates exactly. Immutable.
/// </summary>
public sealed class AdapterFactors
{
    /// <summary>Number of <see cref="AdaptedProjection"/> values.</summary>
    public const int ProjectionCount = 4;

    private readonly LowRankUpdate?[] _updates; // [layer * 4 + projection]

    private AdapterFactors(int layers, LowRankUpdate?[] updates)
    {
        Layers = layers;
        _updates = updates;
        long bytes = 0;
        var maxRank = 0;
        foreach (var u in updates)
        {
            if (u is null) continue;
            bytes += 4L * (u.A.Length + u.B.Length);
            maxRank = Math.Max(maxRank, u.Rank);
        }
        Bytes = bytes;
        MaxRank = maxRank;
    }

    /// <summary>Transformer blocks of the base model.</summary>
    public int Layers { get; }

    /// <summary>Bytes of fp32 A and B (what a step reads for this adapter when every layer runs).</summary>
    public long Bytes { get; }

    /// <summary>Largest rank of any projection's (fused) update.</summary>
    public int MaxRank { get; }

    /// <summary>The update of one projection, or null when the adapter leaves it unchanged.</summary>
    public LowRankUpdate? Get(int layer, AdaptedProjection projection) => _updates[layer * ProjectionCount + (int)projection];

    /// <summary>(in, out) widths of a projection of <paramref name="c"/>.</summary>
    public static (int In, int Out) Shape(ModelConfig c, AdaptedProjection projection)
    {
        int d = c.HiddenSize, q = c.NumHeads * c.HeadDim, kv = c.NumKvHeads * c.HeadDim, f = c.IntermediateSize;
        var llama = c.Architecture == ModelArchitecture.Llama;
        return projection switch
        {
            AdaptedProjection.Qkv => (d, q + 2 * kv),
            AdaptedProjection.Out => (q, d),
            AdaptedProjection.Up => (d, llama ? 2 * f : f),
            AdaptedProjection.Down => (f, d),
            _ => throw new ArgumentOutOfRangeException(nameof(projection)),
        };
    }

    /// <summary>
    /// Converts PEFT-oriented modules into engine updates for <paramref name="c"/> (an update made of one module keeps
    /// that module's A array rather than copying it: callers must not change the arrays afterwards). Throws
    /// <see cref="ArgumentException"/> naming the module for an unknown name, a layer out of range, a duplicate, or a
    /// shape that does not match the base model (the store validates uploads; this guards the node).
    /// With <paramref name="consume"/> the caller hands the modules' arrays over (it never reads them again): an update
    /// made of one module then also reuses that module's B array, transposed and scaled in place through a pooled
    /// scratch buffer, so a cold activation allocates the adapter's bytes once instead of twice.
    /// </summary>
    public static AdapterFactors FromLora(ModelConfig c, IEnumerable<LoraModule> modules, bool consume = false)
    {
        ArgumentNullException.ThrowIfNull(modules);
        var parts = new Dictionary<(int Layer, AdaptedProjection P), List<(int Offset, LoraModule M)>>();
        var seen = new HashSet<(int, string)>();
        foreach (var m in modules)
        {
            if ((uint)m.Layer >= (uint)c.NumLayers)
            {
                throw new ArgumentException($"module {m.Module} of layer {m.Layer}: the base model has {c.NumLayers} layers", nameof(modules));
            }
            if (!seen.Add((m.Layer, m.Module))) throw new ArgumentException($"module {m.Module} of layer {m.Layer} appears twice", nameof(modules));
            var (projection, offset, inDim, outDim) = Locate(c, m.Module);
            if (m.Rank < 1 || m.A.Length != m.Rank * inDim || m.B.Length != outDim * m.Rank)
            {
                throw new ArgumentException(
                    $"module {m.Module} of layer {m.Layer}: expected A [{m.Rank}, {inDim}] and B [{outDim}, {m.Rank}], got {m.A.Length} and {m.B.Length} values",
                    nameof(modules));
            }
            if (!parts.TryGetValue((m.Layer, projection), out var list)) parts[(m.Layer, projection)] = list = [];
            list.Add((offset, m));
        }

        var updates = new LowRankUpdate?[c.NumLayers * ProjectionCount];
        foreach (var ((layer, projection), list) in parts)
        {
            var (inDim, outDim) = Shape(c, projection);
            list.Sort((x, y) => x.Offset.CompareTo(y.Offset));
            var rank = 0;
            foreach (var (_, m) in list) rank += m.Rank;
            // A single part's A is already in engine orientation: keep the module's array (no copy; neither side
            // mutates it). Otherwise every element of A is written; B too when one part covers the whole projection
            // (else block-diagonal zeros).
            var a = list.Count == 1 ? list[0].M.A : GC.AllocateUninitializedArray<float>(rank * inDim);
            var whole = list.Count == 1 && list[0].M.B.Length / list[0].M.Rank == outDim;
            if (whole && consume)
            {
                var m = list[0].M;
                var scratch = ArrayPool<float>.Shared.Rent(m.B.Length);
                m.B.AsSpan().CopyTo(scratch);
                TransposeInto(scratch, outDim, m.Rank, m.Scale, m.B, outDim, colOffset: 0);
                ArrayPool<float>.Shared.Return(scratch);
                updates[layer * ProjectionCount + (int)projection] = new LowRankUpdate(rank, a, m.B);
                continue;
            }
            var b = whole ? GC.AllocateUninitializedArray<float>(rank * outDim) : new float[rank * outDim];
            var r0 = 0;
            foreach (var (offset, m) in list)
            {
                if (!ReferenceEquals(a, m.A)) m.A.AsSpan(0, m.Rank * inDim).CopyTo(a.AsSpan(r0 * inDim)); // A'[r0 + k, i] = A[k, i]
                TransposeInto(m.B, m.B.Length / m.Rank, m.Rank, m.Scale, b, outDim, offset, r0); // B'[r0 + k, offset + o] = s·B[o, k]
                r0 += m.Rank;
            }
            updates[layer * ProjectionCount + (int)projection] = new LowRankUpdate(rank, a, b);
        }
        return new AdapterFactors(c.NumLayers, updates);
    }

    /// <summary>
    /// dst[(rowOffset + j)·dstStride + colOffset + i] = scale · src[i·cols + j] for a row-major src [rows, cols], in 8×8
    /// tiles so both sides stay in cache lines (a strided scalar transpose was a quarter of a cold activation).
    /// </summary>
    private static void TransposeInto(float[] src, int rows, int cols, float scale, float[] dst, int dstStride, int colOffset, int rowOffset = 0)
    {
        const int T = 8;
        var s = src.AsSpan(0, rows * cols);
        for (var i0 = 0; i0 < rows; i0 += T)
        {
            var iEnd = Math.Min(i0 + T, rows);
            for (var j0 = 0; j0 < cols; j0 += T)
            {
                var jEnd = Math.Min(j0 + T, cols);
                for (var j = j0; j < jEnd; j++)
                {
                    var d = dst.AsSpan((rowOffset + j) * dstStride + colOffset, rows);
                    for (var i = i0; i < iEnd; i++) d[i] = scale * s[i * cols + j];
                }
            }
        }
    }

    /// <summary>
    /// A weighted linear merge <c>ΔW = Σ wᵢ·ΔWᵢ</c>, exact: the parts' A and B stacked, B scaled by the part's weight
    /// (the merged rank is the sum of the parts' ranks).
    /// </summary>
    public static AdapterFactors Merge(ModelConfig c, IReadOnlyList<(AdapterFactors Adapter, float Weight)> parts)
    {
        ArgumentNullException.ThrowIfNull(parts);
        if (parts.Count == 0) throw new ArgumentException("a merge needs at least one adapter", nameof(parts));
        foreach (var (adapter, weight) in parts)
        {
            if (adapter.Layers != c.NumLayers) throw new ArgumentException("every merged adapter must belong to the same base model", nameof(parts));
            if (!float.IsFinite(weight)) throw new ArgumentException($"merge weight {weight} is not finite", nameof(parts));
        }
        var updates = new LowRankUpdate?[c.NumLayers * ProjectionCount];
        for (var layer = 0; layer < c.NumLayers; layer++)
        {
            for (var p = 0; p < ProjectionCount; p++)
            {
                var projection = (AdaptedProjection)p;
                var (inDim, outDim) = Shape(c, projection);
                var rank = 0;
                foreach (var (adapter, _) in parts) rank += adapter.Get(layer, projection)?.Rank ?? 0;
                if (rank == 0) continue;
                var a = new float[rank * inDim];
                var b = new float[rank * outDim];
                var r0 = 0;
                foreach (var (adapter, weight) in parts)
                {
                    if (adapter.Get(layer, projection) is not { } u) continue;
                    u.A.CopyTo(a.AsSpan(r0 * inDim));
                    for (var k = 0; k < u.Rank; k++)
                    {
                        System.Numerics.Tensors.TensorPrimitives.Multiply(u.B.AsSpan(k * outDim, outDim), weight, b.AsSpan((r0 + k) * outDim, outDim));
                    }
                    r0 += u.Rank;
                }
                updates[layer * ProjectionCount + p] = new LowRankUpdate(rank, a, b);
            }
        }
        return new AdapterFactors(c.NumLayers, updates);
    }

    /// <summary>Maps a module name to its fused projection, its column offset in the fused output, and its (in, out).</summary>
    private static (AdaptedProjection Projection, int Offset, int In, int Out) Locate(ModelConfig c, string module)
    {
        int d = c.HiddenSize, q = c.NumHeads * c.HeadDim, kv = c.NumKvHeads * c.HeadDim, f = c.IntermediateSize;
        if (c.Architecture == ModelArchitecture.Gpt2)
        {
            return module switch
            {
                "attn.c_attn" => (AdaptedProjection.Qkv, 0, d, q + 2 * kv),
                "attn.c_proj" => (AdaptedProjection.Out, 0, q, d),
                "mlp.c_fc" => (AdaptedProjection.Up, 0, d, f),
                "mlp.c_proj" => (AdaptedProjection.Down, 0, f, d),
                _ => throw new ArgumentException($"module {module} is not an adaptable GPT-2 projection (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj)", nameof(module)),
            };
        }
        if (c.FusedProjections)
        {
            return module switch
            {
                "self_attn.qkv_proj" => (AdaptedProjection.Qkv, 0, d, q + 2 * kv),
                "self_attn.o_proj" => (AdaptedProjection.Out, 0, q, d),
                "mlp.gate_up_proj" => (AdaptedProjection.Up, 0, d, 2 * f),
                "mlp.down_proj" => (AdaptedProjection.Down, 0, f, d),
                _ => throw new ArgumentException($"module {module} is not an adaptable Phi-3 projection (self_attn.qkv_proj, self_attn.o_proj, mlp.gate_up_proj, mlp.down_proj)", nameof(module)),
            };
        }
        return module switch
        {
            "self_attn.q_proj" => (AdaptedProjection.Qkv, 0, d, q),
            "self_attn.k_proj" => (AdaptedProjection.Qkv, q, d, kv),
            "self_attn.v_proj" => (AdaptedProjection.Qkv, q + kv, d, kv),
            "self_attn.o_proj" => (AdaptedProjection.Out, 0, q, d),
            "mlp.gate_proj" => (AdaptedProjection.Up, 0, d, f),
            "mlp.up_proj" => (AdaptedProjection.Up, f, d, f),
            "mlp.down_proj" => (AdaptedProjection.Down, 0, f, d),
            _ => throw new ArgumentException($"module {module} is not an adaptable Llama projection (self_attn.q/k/v/o_proj, mlp.gate/up/down_proj)", nameof(module)),
        };
    }
}
