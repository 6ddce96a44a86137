using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Microsoft.ML.OnnxRuntime;
using Serving.Inference.Runtime;
using static Serving.Inference.Runtime.CustomOpAbi;

namespace Serving.Inference.Rewards;

/// <summary>
/// <c>serving.otter::OtterSideStep</c>, an ONNX Runtime CPU custom operator written in C#: everything of a decode step
/// of an Otter side network between its input projection and its output projection, for every (row, layer) pair at
/// once — the rotary on q and k, the write of the new K/V into the side cache, one causal attention per pair and head,
/// and the SwiGLU of the FFN — reading the projection's output where it lies and writing the result in the layout the
/// output projection reads. It replaces what took ten ONNX nodes (split, transposes, reshapes, GroupQueryAttention over
/// (row, layer) pairs, sigmoid, products, concat) and the per-step C# fill of per-pair lengths: at the demo's size each
/// of those nodes cost more dispatch than arithmetic, and GroupQueryAttention's per-(pair, head) GEMM calls over a
/// one-token query were most of the step's side cost.
/// <para>
/// Inputs: <c>proj</c> [L, B, 3·H·hd + 2·F] (per layer and row: q, k, v of H heads, then gate and up of F neurons),
/// <c>k_cache</c> and <c>v_cache</c> [S, H, C, hd] (written in place; pair (row b, layer l) is entry b·L + l, S ≥ B·L),
/// <c>positions</c> int64 [B] (each row's cached length, which is the new token's position and its cache index),
/// <c>cos</c> and <c>sin</c> [P, ≥ R/2] (the base's rotary tables, rotate-half style on the first R dims of each head)
/// and <c>params</c> float [2]: <c>(scale, R)</c> — the score scale and the rotated dims per head (0: no rotary; the
/// tables are then not read). Output: <c>mixed</c> [B, L·(H·hd + F)]: per row, per layer, the attention output of the
/// H heads and then silu(gate) ⊙ up, so that one MatMul with the layers' [O; Down] stacked gives the summed update.
/// </para>
/// One unit per pair, on the session's intra-op pool when the step is large enough. Bad shapes or positions fail the
/// run with <c>INVALID_ARGUMENT</c>; nothing is read or written out of bounds.
/// </summary>
internal static unsafe class OtterSideStepOp
{
    public const string Domain = "serving.otter";
    public const string Name = "OtterSideStep";
    public const int InputCount = 7;

    /// <summary>Length of the <c>params</c> input: scale, rotated dims per head.</summary>
    public const int ParameterCount = 2;

    private const long InlineWork = 1 << 16; // multiply-adds under which a step runs inline (waking the pool costs more)
    private const int StackScores = 4096;    // cached positions up to which a pair's scores live on the stack
    private const int BatchesPerThread = 4;  // pool batches per thread of a parallel step

    private static readonly CustomOpDomain Ops = new(Domain, () =>
    {
        // v16: CreateKernelV2 / KernelComputeV2 (errors as statuses); input 3 (positions) is int64.
        var op = NewCpuOp(Name, 16, InputCount, int64Inputs: 1UL << 3, &KernelCompute, &KernelComputeV2);
        return (nint)op;
    });

    /// <summary>Adds the <see cref="Domain"/> operators to <paramref name="options"/> (CPU provider).</summary>
    public static void Register(SessionOptions options) => Ops.Register(options);

    [UnmanagedCallersOnly] private static void KernelCompute(nint kernel, nint context) => ComputeV1(Name, &Compute, context);
    [UnmanagedCallersOnly] private static nint KernelComputeV2(nint kernel, nint context) => ComputeV2(Name, &Compute, context);

    private static nint Invalid(string message) => InvalidArgument(Name, message);

    private static nint Compute(nint context)
    {
        Span<long> pDims = stackalloc long[8], kDims = stackalloc long[8], vDims = stackalloc long[8], posDims = stackalloc long[8];
        Span<long> cosDims = stackalloc long[8], sinDims = stackalloc long[8], aDims = stackalloc long[8];
        nint s;
        if ((s = OrtNativeApi.Input(context, 0, out var proj, pDims, out var pRank)) != 0) return s;
        if ((s = OrtNativeApi.Input(context, 1, out var kc, kDims, out var kRank)) != 0) return s;
        if ((s = OrtNativeApi.Input(context, 2, out var vc, vDims, out var vRank)) != 0) return s;
        if ((s = OrtNativeApi.Input(context, 3, out var positions, posDims, out var posRank)) != 0) return s;
        if ((s = OrtNativeApi.Input(context, 4, out var cos, cosDims, out var cosRank)) != 0) return s;
        if ((s = OrtNativeApi.Input(context, 5, out var sin, sinDims, out var sinRank)) != 0) return s;
        if ((s = OrtNativeApi.Input(context, 6, out var attnParams, aDims, out var aRank)) != 0) return s;
        if (pRank != 3 || kRank != 4 || vRank != 4 || posRank != 1 || cosRank != 2 || sinRank != 2 || aRank != 1)
        {
            return Invalid($"expected proj [L, B, W], caches [S, H, C, hd], positions [B], cos/sin [P, ·], params [{ParameterCount}]; got ranks {pRank}, {kRank}, {vRank}, {posRank}, {cosRank}, {sinRank}, {aRank}");
        }
        if (aDims[0] != ParameterCount) return Invalid($"params must be float [{ParameterCount}] (scale, rotary dims)");
        for (var i = 0; i < 4; i++)
        {
            if (vDims[i] != kDims[i]) return Invalid("the K and V caches differ in shape");
        }
        long layers = pDims[0], batch = pDims[1], width = pDims[2];
        long slots = kDims[0], heads = kDims[1], capacity = kDims[2], hd = kDims[3];
        var q = heads * hd;
        var ffn = (width - 3 * q) / 2;
        if (heads <= 0 || hd <= 0 || width < 3 * q || (width - 3 * q) % 2 != 0)
        {
            return Invalid($"proj width {width} is not 3·{heads}·{hd} + 2·F");
        }
        if (posDims[0] != batch) return Invalid($"positions [{posDims[0]}] for {batch} rows");
        if (layers * batch > slots) return Invalid($"{batch} rows of {layers} layers need {layers * batch} cache entries; the cache has {slots}");
        var pa = (float*)attnParams;
        var rotaryDims = pa[1];
        if (!(pa[0] > 0) || !(rotaryDims >= 0) || rotaryDims > hd || rotaryDims % 2 != 0)
        {
            return Invalid($"params ({pa[0]}, {pa[1]}): the scale must be positive and the rotary dims even, in [0, {hd}]");
        }
        var half = (int)rotaryDims / 2;
        if (half > 0 && (cosDims[1] < half || sinDims[1] != cosDims[1] || sinDims[0] != cosDims[0]))
        {
            return Invalid($"cos [{cosDims[0]}, {cosDims[1]}] and sin [{sinDims[0]}, {sinDims[1]}] do not hold {half} frequencies");
        }
        var pos = (long*)positions;
        long work = 0;
        for (long b = 0; b < batch; b++)
        {
            if (pos[b] < 0 || pos[b] >= capacity) return Invalid($"row {b}: position {pos[b]} outside the cache's {capacity}");
            if (half > 0 && pos[b] >= cosDims[0]) return Invalid($"row {b}: position {pos[b]} outside the rotary tables' {cosDims[0]}");
            work += (pos[b] + 1) * q * 2 + ffn;
        }
        work *= layers;
        Span<long> outDims = [batch, layers * (q + ffn)];
        if ((s = OrtNativeApi.Output(context, 0, outDims, out var output)) != 0) return s;

        var job = new Job
        {
            Proj = (float*)proj, KCache = (float*)kc, VCache = (float*)vc, Positions = pos, Cos = (float*)cos, Sin = (float*)sin,
            Out = (float*)output, Layers = (int)layers, Batch = (int)batch, Width = (int)width, Heads = (int)heads,
            HeadDim = (int)hd, Capacity = (int)capacity, Ffn = (int)ffn, Half = half, TableStride = (int)cosDims[1], Scale = pa[0],
        };
        var units = (int)(layers * batch);
        if (work < InlineWork || units == 1)
        {
            for (var u = 0; u < units; u++) PairUnit(&job, u);
            return 0;
        }
        // Several batches per thread: a pair's cost grows with its row's length, and a batch whose thread is descheduled
        // holds up the step (the pool hands out batches dynamically, so the others take up the rest).
        return OrtNativeApi.ParallelFor(context, &Pair, units, Math.Min(units, BatchesPerThread * Math.Max(1, OrtRuntime.Threads)), &job);
    }

    private struct Job
    {
        public float* Proj, KCache, VCache, Cos, Sin, Out;
        public long* Positions;
        public int Layers, Batch, Width, Heads, HeadDim, Capacity, Ffn, Half, TableStride;
        public float Scale;
    }

    [UnmanagedCallersOnly]
    private static void Pair(void* state, nuint unit) => PairUnit((Job*)state, (long)unit);

    /// <summary>One (row, layer) pair: rotary, cache write, attention of every head, SwiGLU.</summary>
    // The kernels are compiled fully optimised at once: tier-0 code of these vector loops ran ~8× slower, and a loaded
    // machine promotes late.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PairUnit(Job* job, long unit)
    {
        int layers = job->Layers, hd = job->HeadDim, heads = job->Heads, half = job->Half, ffn = job->Ffn;
        var b = unit / layers;
        var l = unit % layers;
        var q = heads * hd;
        var position = job->Positions[b];
        var input = job->Proj + (l * job->Batch + b) * job->Width; // q | k | v | gate | up
        var output = job->Out + (b * layers + l) * (q + ffn);      // attention | swiglu
        var entry = b * layers + l;
        var cos = job->Cos + position * job->TableStride;
        var sin = job->Sin + position * job->TableStride;
        var length = (int)position + 1;
        var scores = length <= StackScores ? stackalloc float[length] : new float[length];
        Span<float> query = hd <= 1024 ? stackalloc float[hd] : new float[hd];
        for (var h = 0; h < heads; h++)
        {
            var cacheHead = (entry * heads + h) * (long)job->Capacity * hd;
            var keys = job->KCache + cacheHead;
            var values = job->VCache + cacheHead;
            new ReadOnlySpan<float>(input + h * hd, hd).CopyTo(query);
            var key = new Span<float>(keys + position * hd, hd);
            new ReadOnlySpan<float>(input + q + h * hd, hd).CopyTo(key);
            new ReadOnlySpan<float>(input + 2 * q + h * hd, hd).CopyTo(new Span<float>(values + position * hd, hd));
            if (half > 0)
            {
                Rotate(query, cos, sin, half);
                Rotate(key, cos, sin, half);
            }
            fixed (float* qp = query)
            fixed (float* sp = scores)
            {
                Scores(qp, keys, length, hd, job->Scale, sp);
                var s = new Span<float>(sp, length);
                var max = TensorPrimitives.Max(s);
                TensorPrimitives.Subtract(s, max, s);
                TensorPrimitives.Exp(s, s);
                Weighted(sp, values, length, hd, 1f / TensorPrimitives.Sum(s), output + h * hd);
            }
        }
        // silu(gate) ⊙ up = gate · sigmoid(gate) · up, into the output's FFN part.
        var gate = new ReadOnlySpan<float>(input + 3 * q, ffn);
        var f = new Span<float>(output + q, ffn);
        TensorPrimitives.Sigmoid(gate, f);
        TensorPrimitives.Multiply(f, gate, f);
        TensorPrimitives.Multiply(f, new ReadOnlySpan<float>(input + 3 * q + ffn, ffn), f);
    }

    /// <summary>
    /// s[j] = scale · q·k_j for the <paramref name="length"/> keys of one head, four keys at a time (four independent
    /// accumulator chains share each load of q); the few dims past the last multiple of 8 are added in scalar.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Scores(float* q, float* keys, int length, int hd, float scale, float* s)
    {
        var vectorDims = hd & ~7;
        var j = 0;
        for (; j + 4 <= length; j += 4)
        {
            float* k0 = keys + (long)j * hd, k1 = k0 + hd, k2 = k1 + hd, k3 = k2 + hd;
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (var c = 0; c < vectorDims; c += 8)
            {
                var qv = Vector256.Load(q + c);
                a0 = Vector256.FusedMultiplyAdd(qv, Vector256.Load(k0 + c), a0);
                a1 = Vector256.FusedMultiplyAdd(qv, Vector256.Load(k1 + c), a1);
                a2 = Vector256.FusedMultiplyAdd(qv, Vector256.Load(k2 + c), a2);
                a3 = Vector256.FusedMultiplyAdd(qv, Vector256.Load(k3 + c), a3);
            }
            float s0 = Vector256.Sum(a0), s1 = Vector256.Sum(a1), s2 = Vector256.Sum(a2), s3 = Vector256.Sum(a3);
            for (var c = vectorDims; c < hd; c++)
            {
                s0 += q[c] * k0[c];
                s1 += q[c] * k1[c];
                s2 += q[c] * k2[c];
                s3 += q[c] * k3[c];
            }
            s[j] = s0 * scale;
            s[j + 1] = s1 * scale;
            s[j + 2] = s2 * scale;
            s[j + 3] = s3 * scale;
        }
        for (; j < length; j++)
        {
            var k = keys + (long)j * hd;
            var a = Vector256<float>.Zero;
            for (var c = 0; c < vectorDims; c += 8) a = Vector256.FusedMultiplyAdd(Vector256.Load(q + c), Vector256.Load(k + c), a);
            var sum = Vector256.Sum(a);
            for (var c = vectorDims; c < hd; c++) sum += q[c] * k[c];
            s[j] = sum * scale;
        }
    }

    /// <summary>
    /// o = inv · Σ_j p[j]·v_j over one head's <paramref name="length"/> values, 32 dims at a time in four register
    /// accumulators (no store per position), then 8 at a time, then scalar.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Weighted(float* p, float* values, int length, int hd, float inv, float* o)
    {
        var c = 0;
        for (; c + 32 <= hd; c += 32)
        {
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            var v = values + c;
            for (var j = 0; j < length; j++, v += hd)
            {
                var w = Vector256.Create(p[j]);
                a0 = Vector256.FusedMultiplyAdd(Vector256.Load(v), w, a0);
                a1 = Vector256.FusedMultiplyAdd(Vector256.Load(v + 8), w, a1);
                a2 = Vector256.FusedMultiplyAdd(Vector256.Load(v + 16), w, a2);
                a3 = Vector256.FusedMultiplyAdd(Vector256.Load(v + 24), w, a3);
            }
            var scale = Vector256.Create(inv);
            (a0 * scale).Store(o + c);
            (a1 * scale).Store(o + c + 8);
            (a2 * scale).Store(o + c + 16);
            (a3 * scale).Store(o + c + 24);
        }
        for (; c + 8 <= hd; c += 8)
        {
            var a = Vector256<float>.Zero;
            var v = values + c;
            for (var j = 0; j < length; j++, v += hd) a = Vector256.FusedMultiplyAdd(Vector256.Load(v), Vector256.Create(p[j]), a);
            (a * Vector256.Create(inv)).Store(o + c);
        }
        for (; c < hd; c++)
        {
            var sum = 0f;
            for (var j = 0; j < length; j++) sum += p[j] * values[(long)j * hd + c];
            o[c] = sum * inv;
        }
    }

    /// <summary>Rotate-half RoPE on the first 2·<paramref name="half"/> dims of one head: (x₁, x₂) → (x₁·cos − x₂·sin, x₂·cos + x₁·sin).</summary>
    private static void Rotate(Span<float> x, float* cos, float* sin, int half)
    {
        for (var i = 0; i < half; i++)
        {
            float x1 = x[i], x2 = x[i + half];
            x[i] = x1 * cos[i] - x2 * sin[i];
            x[i + half] = x2 * cos[i] + x1 * sin[i];
        }
    }
}
