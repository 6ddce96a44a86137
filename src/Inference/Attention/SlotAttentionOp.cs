using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Serving.Inference.Runtime;
using static Serving.Inference.Runtime.CustomOpAbi;

namespace Serving.Inference.Attention;

/// <summary>
/// <c>serving.attention::SlotAttention</c>, an ONNX Runtime CPU custom operator written in C#: causal attention for a
/// step whose tokens belong to rows of a KV cache in any slots and at any positions — a packed step. Where
/// <c>GroupQueryAttention</c> needs the step's rows to be a contiguous range of cache slots (and, with a past, one row per
/// multi-token step on CPU), this reads and writes the whole cache through a plan, so a step can run any subset of rows
/// (early exit compacts the rows still running) and rows with several tokens each (speculative verification).
/// <para>
/// Inputs: <c>q</c> [..., N, H·hd], <c>k</c> and <c>v</c> [..., N, KV·hd] (N packed tokens; RoPE already applied to q
/// and k), <c>k_cache</c> and <c>v_cache</c> [S, KV, C, hd] (every slot of one layer's cache; written in place),
/// <c>plan</c> int64 [P]: <c>R, then R × (slot, start, first token, token count)</c>: row r's tokens are packed tokens
/// [first, first + count) at positions [start, start + count) of slot <c>slot</c>, and <c>params</c> float [3]:
/// <c>(scale, softcap, window)</c> — the score scale, tanh soft-capping <c>c·tanh(s/c)</c> of the scaled scores (0: none) and
/// the sliding window in tokens (0: full causal attention; otherwise a query at p sees positions (p − window, p]).
/// Output: attention [..., N, H·hd]; tokens no row names get zeros. H is q's width over hd, KV a divisor of H (grouped-query).
/// </para>
/// Computation: every row's new K/V are written into its slot first (so a row's later tokens see its earlier ones),
/// then one unit per (row, head) attends each of the row's tokens over positions [0, its own], softmax in float with
/// the maximum subtracted, on the session's intra-op pool when the step is large enough. A plan that points outside
/// the tensors fails the run with <c>INVALID_ARGUMENT</c>; nothing is read or written out of bounds.
/// </summary>
internal static unsafe class SlotAttentionOp
{
    public const string Domain = "serving.attention";
    public const string Name = "SlotAttention";
    public const int InputCount = 7;

    /// <summary>Length of the <c>params</c> input: scale, softcap, window.</summary>
    public const int ParameterCount = 3;

    /// <summary>The <c>params</c> input of layer <paramref name="layer"/> of <paramref name="c"/>.</summary>
    public static float[] Parameters(Serving.Checkpoints.ModelConfig c, int layer) =>
        [c.AttentionScale ?? 1f / MathF.Sqrt(c.HeadDim), c.AttentionSoftcap ?? 0f, c.SlidingWindow(layer)];
    private const long InlineWork = 1 << 16; // multiply-adds under which a step runs inline (waking the pool costs more)

    private static readonly CustomOpDomain Ops = new(Domain, () =>
    {
        // v16: CreateKernelV2 / KernelComputeV2 (errors as statuses); input 5 (the plan) is int64.
        var op = NewCpuOp(Name, 16, InputCount, int64Inputs: 1UL << 5, &KernelCompute, &KernelComputeV2);
        return (nint)op;
    });

    /// <summary>Adds the <see cref="Domain"/> operators to <paramref name="options"/> (CPU provider).</summary>
    public static void Register(SessionOptions options) => Ops.Register(options);

    [UnmanagedCallersOnly] private static void KernelCompute(nint kernel, nint context) => ComputeV1(Name, &Compute, context);
    [UnmanagedCallersOnly] private static nint KernelComputeV2(nint kernel, nint context) => ComputeV2(Name, &Compute, context);

    private static nint Invalid(string message) => InvalidArgument(Name, message);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static nint Compute(nint context)
    {
        Span<long> qDims = stackalloc long[8], kDims = stackalloc long[8], vDims = stackalloc long[8];
        Span<long> kcDims = stackalloc long[8], vcDims = stackalloc long[8], pDims = stackalloc long[8], aDims = stackalloc long[8];
        nint s;
        if ((s = OrtNativeApi.Input(context, 0, out var q, qDims, out var qRank)) != 0) return s;
        if ((s = OrtNativeApi.Input(context, 1, out var k, kDims, out var kRank)) != 0) return s;
        if ((s = OrtNativeApi.Input(context, 2, out var v, vDims, out var vRank)) != 0) return s;
        if ((s = OrtNativeApi.Input(context, 3, out var kc, kcDims, out var kcRank)) != 0) return s;
        if ((s = OrtNativeApi.Input(context, 4, out var vc, vcDims, out var vcRank)) != 0) return s;
        if ((s = OrtNativeApi.Input(context, 5, out var plan, pDims, out var pRank)) != 0) return s;
        if ((s = OrtNativeApi.Input(context, 6, out var attnParams, aDims, out var aRank)) != 0) return s;
        if (aRank != 1 || aDims[0] != ParameterCount) return Invalid($"params must be float [{ParameterCount}] (scale, softcap, window)");
        var pa = (float*)attnParams;
        if (!(pa[0] > 0) || !(pa[1] >= 0) || !(pa[2] >= 0) || pa[2] != MathF.Floor(pa[2])) return Invalid($"params ({pa[0]}, {pa[1]}, {pa[2]}): scale must be positive, softcap and window non-negative, window whole");
        if (qRank < 2 || kRank != qRank || vRank != qRank || kcRank != 4 || vcRank != 4 || pRank != 1)
        {
            return Invalid($"expected q/k/v [..., N, ·] of one rank, caches [S, KV, C, hd], plan [P]; got ranks {qRank}, {kRank}, {vRank}, {kcRank}, {vcRank}, {pRank}");
        }
        long tokens = 1;
        for (var i = 0; i < qRank - 1; i++)
        {
            if (kDims[i] != qDims[i] || vDims[i] != qDims[i]) return Invalid("q, k and v differ in their leading dimensions");
            tokens *= qDims[i];
        }
        long slots = kcDims[0], kvHeads = kcDims[1], context_ = kcDims[2], hd = kcDims[3];
        for (var i = 0; i < 4; i++)
        {
            if (vcDims[i] != kcDims[i]) return Invalid("the K and V caches differ in shape");
        }
        var qWidth = qDims[qRank - 1];
        if (hd <= 0 || kvHeads <= 0 || qWidth % hd != 0 || kDims[kRank - 1] != kvHeads * hd || vDims[vRank - 1] != kvHeads * hd)
        {
            return Invalid($"q width {qWidth}, k/v width {kDims[kRank - 1]} do not fit {kvHeads} KV heads of {hd}");
        }
        var heads = qWidth / hd;
        if (heads % kvHeads != 0) return Invalid($"{heads} query heads are not a multiple of {kvHeads} KV heads");
        var p = (long*)plan;
        var rows = pDims[0] > 0 ? p[0] : -1;
        if (rows < 0 || 1 + 4 * rows > pDims[0]) return Invalid($"plan of length {pDims[0]} cannot hold {rows} rows");
        long work = 0;
        for (long r = 0; r < rows; r++)
        {
            long slot = p[1 + 4 * r], start = p[2 + 4 * r], first = p[3 + 4 * r], count = p[4 + 4 * r];
            if ((ulong)slot >= (ulong)slots) return Invalid($"row {r}: slot {slot} outside [0, {slots})");
            if (start < 0 || count < 0 || start + count > context_) return Invalid($"row {r}: positions [{start}, {start + count}) outside the cache's {context_}");
            if (first < 0 || first + count > tokens) return Invalid($"row {r}: tokens [{first}, {first + count}) outside the step's {tokens}");
            work += count * (start + count) * heads * hd * 2;
        }
        if ((s = OrtNativeApi.Output(context, 0, qDims[..qRank], out var output)) != 0) return s;
        var outSpan = new Span<float>(output, checked((int)(tokens * qWidth)));
        outSpan.Clear();

        var job = new Job
        {
            Q = (float*)q, K = (float*)k, V = (float*)v, KCache = (float*)kc, VCache = (float*)vc, Out = (float*)output, Plan = p,
            Heads = (int)heads, KvHeads = (int)kvHeads, HeadDim = (int)hd, Context = (int)context_, Scale = pa[0],
            Softcap = pa[1], Window = (int)Math.Min(pa[2], int.MaxValue),
        };
        // New K/V first, in plan order: a row's later tokens attend to its earlier ones.
        for (long r = 0; r < rows; r++)
        {
            long slot = p[1 + 4 * r], start = p[2 + 4 * r], first = p[3 + 4 * r], count = p[4 + 4 * r];
            for (long t = 0; t < count; t++)
            {
                for (long h = 0; h < kvHeads; h++)
                {
                    var cacheOffset = ((slot * kvHeads + h) * context_ + start + t) * hd;
                    var tokenOffset = ((first + t) * kvHeads + h) * hd;
                    Buffer.MemoryCopy(job.K + tokenOffset, job.KCache + cacheOffset, hd * sizeof(float), hd * sizeof(float));
                    Buffer.MemoryCopy(job.V + tokenOffset, job.VCache + cacheOffset, hd * sizeof(float), hd * sizeof(float));
                }
            }
        }
        var units = (int)(rows * HeadGroups((int)heads));
        if (units == 0) return 0;
        if (work < InlineWork || units == 1)
        {
            for (var u = 0; u < units; u++) AttendUnit(&job, u);
            return 0;
        }
        return OrtNativeApi.ParallelFor(context, &Attend, units, Math.Max(1, OrtRuntime.Threads), &job);
    }

    private struct Job
    {
        public float* Q, K, V, KCache, VCache, Out;
        public long* Plan;
        public int Heads, KvHeads, HeadDim, Context, Window;
        public float Scale, Softcap;
    }

    // The unit and its loops run fully optimised from the first call (as in SegmentedLoraOp): under tiered compilation
    // a busy process can keep a helper called from native code at tier 0 for seconds.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    [UnmanagedCallersOnly]
    private static void Attend(void* state, nuint unit) => AttendUnit((Job*)state, (long)unit);

    /// <summary>Queries of one row attended together: each key and value row is read once for this many of them.</summary>
    private const int QueryBlock = 4;

    /// <summary>
    /// Heads one unit attends: a decode row's heads read their K and V rows interleaved, position by position, so that
    /// several short streams are in flight at once. Each head's cache rows are a separate run of a few kilobytes, and
    /// one stream at a time pays the memory latency of every run's start (a probe at 32 rows × 12 heads, 25–40 cached
    /// positions, caches out of the last-level cache: 1.8× faster with six heads interleaved than one at a time,
    /// as fast as a position-major cache layout).
    /// </summary>
    private const int HeadGroup = 6;

    private static int HeadGroups(int heads) => (heads + HeadGroup - 1) / HeadGroup;

    /// <summary>Score rows a thread's scratch holds: a block of queries, or a decode row's group of heads.</summary>
    private const int ScratchRows = QueryBlock > HeadGroup ? QueryBlock : HeadGroup;

    /// <summary>Per pool thread: score rows of one block of queries or one group of heads (ScratchRows × the cache's context).</summary>
    [ThreadStatic] private static float[]? t_scores;

    /// <summary>
    /// One (row, head): each of the row's tokens attends over the row's positions up to its own. The row's tokens go in
    /// blocks of <see cref="QueryBlock"/> (a prompt chunk, a verification run) so that each cached key and value is read
    /// once per block instead of once per token; a decode row is a block of one.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AttendUnit(Job* job, long unit)
    {
        var groups = HeadGroups(job->Heads);
        var r = unit / groups;
        var h0 = (int)(unit % groups) * HeadGroup;
        var h1 = Math.Min(job->Heads, h0 + HeadGroup);
        if (job->Plan[4 + 4 * r] == 1 && Vector256.IsHardwareAccelerated && job->HeadDim % Vector256<float>.Count == 0)
        {
            AttendDecodeRow(job, r, h0, h1);
            return;
        }
        for (var h = h0; h < h1; h++) AttendHead(job, r, h);
    }

    /// <summary>
    /// One token of row <paramref name="r"/> (a decode row) for heads [<paramref name="h0"/>, <paramref name="h1"/>):
    /// scores for every head position by position, each head's softmax, then the weighted values position by position.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AttendDecodeRow(Job* job, long r, int h0, int h1)
    {
        var p = job->Plan;
        long slot = p[1 + 4 * r], start = p[2 + 4 * r], first = p[3 + 4 * r];
        int hd = job->HeadDim, perKv = job->Heads / job->KvHeads, m = h1 - h0;
        var n = (int)start + 1;
        var lo = Low(job->Window, n);
        var span = n - lo;
        if (t_scores is null || t_scores.Length < HeadGroup * span) t_scores = new float[ScratchRows * Math.Max(span, job->Context)];
        var q = job->Q + (first * job->Heads + h0) * hd;
        var o = job->Out + (first * job->Heads + h0) * hd;
        var keys = stackalloc float*[HeadGroup];
        var values = stackalloc float*[HeadGroup];
        for (var i = 0; i < m; i++)
        {
            long kvh = (h0 + i) / perKv;
            keys[i] = job->KCache + ((slot * job->KvHeads + kvh) * job->Context + lo) * hd;
            values[i] = job->VCache + ((slot * job->KvHeads + kvh) * job->Context + lo) * hd;
        }
        fixed (float* scores = t_scores)
        {
            for (var j = 0; j < span; j++)
            {
                var at = (long)j * hd;
                for (var i = 0; i < m; i++) scores[i * span + j] = Dot(q + i * hd, keys[i] + at, hd);
            }
            for (var i = 0; i < m; i++) Normalise(new Span<float>(scores + i * span, span), job->Scale, job->Softcap);
            for (var j = 0; j < span; j++)
            {
                var at = (long)j * hd;
                for (var i = 0; i < m; i++) Accumulate(scores[i * span + j], values[i] + at, o + i * hd, hd);
            }
        }
    }

    /// <summary>q · k over <paramref name="hd"/> values (a multiple of 8).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Dot(float* q, float* k, int hd)
    {
        Vector256<float> a0 = default, a1 = default;
        var c = 0;
        for (; c + 2 * Vector256<float>.Count <= hd; c += 2 * Vector256<float>.Count)
        {
            a0 = Vector256.FusedMultiplyAdd(Vector256.Load(q + c), Vector256.Load(k + c), a0);
            a1 = Vector256.FusedMultiplyAdd(Vector256.Load(q + c + Vector256<float>.Count), Vector256.Load(k + c + Vector256<float>.Count), a1);
        }
        if (c < hd) a0 = Vector256.FusedMultiplyAdd(Vector256.Load(q + c), Vector256.Load(k + c), a0);
        return Vector256.Sum(a0 + a1);
    }

    /// <summary>o += w · v over <paramref name="hd"/> values (a multiple of 8).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Accumulate(float w, float* v, float* o, int hd)
    {
        var wv = Vector256.Create(w);
        for (var c = 0; c < hd; c += Vector256<float>.Count) Vector256.FusedMultiplyAdd(wv, Vector256.Load(v + c), Vector256.Load(o + c)).Store(o + c);
    }

    /// <summary>One (row, head): the row's tokens in blocks of <see cref="QueryBlock"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AttendHead(Job* job, long r, int h)
    {
        var p = job->Plan;
        long slot = p[1 + 4 * r], start = p[2 + 4 * r], first = p[3 + 4 * r], count = p[4 + 4 * r];
        int hd = job->HeadDim, kvh = h / (job->Heads / job->KvHeads);
        var keys = job->KCache + ((slot * job->KvHeads + kvh) * job->Context) * hd;
        var values = job->VCache + ((slot * job->KvHeads + kvh) * job->Context) * hd;
        var length = (int)(start + count);
        // Sized for the cache's whole context once per thread, so a growing sequence never allocates again.
        if (t_scores is null || t_scores.Length < QueryBlock * length) t_scores = new float[ScratchRows * Math.Max(length, job->Context)];
        var vectorised = Vector256.IsHardwareAccelerated && hd % Vector256<float>.Count == 0;
        fixed (float* scratch = t_scores)
        {
            for (long t0 = 0; t0 < count; t0 += QueryBlock)
            {
                var m = (int)Math.Min(QueryBlock, count - t0);
                // Query i of the block is at position start + t0 + i and sees [lo_i, n_i); the block spans [lo, end).
                var end = (int)(start + t0 + m);
                var lo = Low(job->Window, (int)(start + t0 + 1));
                var span = end - lo;
                var q = job->Q + ((first + t0) * job->Heads + h) * hd;
                long qStride = (long)job->Heads * hd;
                if (vectorised && m > 1) Scores4(q, qStride, m, keys + (long)lo * hd, span, hd, scratch, length);
                else if (vectorised) Scores1(q, keys + (long)lo * hd, span, hd, scratch);
                else ScoresScalar(q, qStride, m, keys + (long)lo * hd, span, hd, scratch, length);
                for (var i = 0; i < m; i++)
                {
                    var n = (int)(start + t0 + i + 1);
                    var own = Low(job->Window, n);
                    var row = new Span<float>(scratch + (long)i * length, span);
                    row[..(own - lo)].Clear();     // positions before this query's window
                    row[(n - lo)..].Clear();       // positions after it (causal)
                    Normalise(row[(own - lo)..(n - lo)], job->Scale, job->Softcap);
                }
                var o = job->Out + ((first + t0) * job->Heads + h) * hd;
                if (vectorised && m > 1) Weighted4(scratch, length, m, values + (long)lo * hd, span, hd, o, qStride);
                else if (vectorised) Weighted1(scratch, values + (long)lo * hd, span, hd, o);
                else WeightedScalar(scratch, length, m, values + (long)lo * hd, span, hd, o, qStride);
            }
        }
    }

    /// <summary>First position a query at position n − 1 sees: n − window with a sliding window, else 0.</summary>
    private static int Low(int window, int n) => window > 0 ? Math.Max(0, n - window) : 0;

    /// <summary>Scaled, soft-capped scores to softmax probabilities, in place.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Normalise(Span<float> s, float scale, float softcap)
    {
        TensorPrimitives.Multiply(s, scale, s);
        if (softcap > 0)
        {
            TensorPrimitives.Multiply(s, 1f / softcap, s);
            TensorPrimitives.Tanh(s, s);
            TensorPrimitives.Multiply(s, softcap, s);
        }
        var max = TensorPrimitives.Max(s);
        TensorPrimitives.Subtract(s, max, s);
        TensorPrimitives.Exp(s, s);
        TensorPrimitives.Multiply(s, 1f / TensorPrimitives.Sum(s), s);
    }

    /// <summary>Raw scores q_i · k_j of up to four queries (rows of <paramref name="scores"/>, stride
    /// <paramref name="stride"/>) over <paramref name="n"/> keys, each key loaded once.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Scores4(float* q, long qStride, int m, float* k, int n, int hd, float* scores, int stride)
    {
        // Missing queries (m < 4) repeat the last one: computed, never read.
        float* q0 = q, q1 = q + qStride * Math.Min(1, m - 1), q2 = q + qStride * Math.Min(2, m - 1), q3 = q + qStride * Math.Min(3, m - 1);
        float* s0 = scores, s1 = scores + stride, s2 = scores + 2L * stride, s3 = scores + 3L * stride;
        for (var j = 0; j < n; j++, k += hd)
        {
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (var c = 0; c < hd; c += Vector256<float>.Count)
            {
                var kv = Vector256.Load(k + c);
                a0 = Vector256.FusedMultiplyAdd(Vector256.Load(q0 + c), kv, a0);
                a1 = Vector256.FusedMultiplyAdd(Vector256.Load(q1 + c), kv, a1);
                a2 = Vector256.FusedMultiplyAdd(Vector256.Load(q2 + c), kv, a2);
                a3 = Vector256.FusedMultiplyAdd(Vector256.Load(q3 + c), kv, a3);
            }
            s0[j] = Vector256.Sum(a0);
            s1[j] = Vector256.Sum(a1);
            s2[j] = Vector256.Sum(a2);
            s3[j] = Vector256.Sum(a3);
        }
    }

    /// <summary>Raw scores q · k_j of one query over <paramref name="n"/> keys, four keys at a time (four independent
    /// accumulator chains, so the FMA latency overlaps).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Scores1(float* q, float* k, int n, int hd, float* scores)
    {
        var j = 0;
        for (; j + 4 <= n; j += 4, k += 4 * hd)
        {
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (var c = 0; c < hd; c += Vector256<float>.Count)
            {
                var qv = Vector256.Load(q + c);
                a0 = Vector256.FusedMultiplyAdd(qv, Vector256.Load(k + c), a0);
                a1 = Vector256.FusedMultiplyAdd(qv, Vector256.Load(k + hd + c), a1);
                a2 = Vector256.FusedMultiplyAdd(qv, Vector256.Load(k + 2 * hd + c), a2);
                a3 = Vector256.FusedMultiplyAdd(qv, Vector256.Load(k + 3 * hd + c), a3);
            }
            scores[j] = Vector256.Sum(a0);
            scores[j + 1] = Vector256.Sum(a1);
            scores[j + 2] = Vector256.Sum(a2);
            scores[j + 3] = Vector256.Sum(a3);
        }
        for (; j < n; j++, k += hd)
        {
            Vector256<float> a = default;
            for (var c = 0; c < hd; c += Vector256<float>.Count) a = Vector256.FusedMultiplyAdd(Vector256.Load(q + c), Vector256.Load(k + c), a);
            scores[j] = Vector256.Sum(a);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ScoresScalar(float* q, long qStride, int m, float* k, int n, int hd, float* scores, int stride)
    {
        for (var i = 0; i < m; i++)
        {
            var query = new ReadOnlySpan<float>(q + i * qStride, hd);
            for (var j = 0; j < n; j++) scores[(long)i * stride + j] = TensorPrimitives.Dot(query, new ReadOnlySpan<float>(k + (long)j * hd, hd));
        }
    }

    /// <summary>o_i = Σ_j p_ij v_j for up to four queries, each value row loaded once per 8-wide column block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Weighted4(float* p, int stride, int m, float* v, int n, int hd, float* o, long oStride)
    {
        float* p0 = p, p1 = p + stride * Math.Min(1, m - 1), p2 = p + stride * Math.Min(2, m - 1), p3 = p + stride * Math.Min(3, m - 1);
        for (var c = 0; c < hd; c += Vector256<float>.Count)
        {
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            var vc = v + c;
            for (var j = 0; j < n; j++, vc += hd)
            {
                var vv = Vector256.Load(vc);
                a0 = Vector256.FusedMultiplyAdd(Vector256.Create(p0[j]), vv, a0);
                a1 = Vector256.FusedMultiplyAdd(Vector256.Create(p1[j]), vv, a1);
                a2 = Vector256.FusedMultiplyAdd(Vector256.Create(p2[j]), vv, a2);
                a3 = Vector256.FusedMultiplyAdd(Vector256.Create(p3[j]), vv, a3);
            }
            a0.Store(o + c);
            if (m > 1) a1.Store(o + oStride + c);
            if (m > 2) a2.Store(o + 2 * oStride + c);
            if (m > 3) a3.Store(o + 3 * oStride + c);
        }
    }

    /// <summary>
    /// o = Σ_j p_j v_j for one query: value rows outer, 64 columns inner (eight accumulators, eight independent chains),
    /// so each value row is read once per 64 columns; a remainder under 64 columns goes 8 at a time.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Weighted1(float* p, float* v, int n, int hd, float* o)
    {
        const int W = 8; // Vector256<float>.Count
        var c0 = 0;
        for (; c0 + 8 * W <= hd; c0 += 8 * W)
        {
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
            var vc = v + c0;
            for (var j = 0; j < n; j++, vc += hd)
            {
                var pj = Vector256.Create(p[j]);
                a0 = Vector256.FusedMultiplyAdd(pj, Vector256.Load(vc), a0);
                a1 = Vector256.FusedMultiplyAdd(pj, Vector256.Load(vc + W), a1);
                a2 = Vector256.FusedMultiplyAdd(pj, Vector256.Load(vc + 2 * W), a2);
                a3 = Vector256.FusedMultiplyAdd(pj, Vector256.Load(vc + 3 * W), a3);
                a4 = Vector256.FusedMultiplyAdd(pj, Vector256.Load(vc + 4 * W), a4);
                a5 = Vector256.FusedMultiplyAdd(pj, Vector256.Load(vc + 5 * W), a5);
                a6 = Vector256.FusedMultiplyAdd(pj, Vector256.Load(vc + 6 * W), a6);
                a7 = Vector256.FusedMultiplyAdd(pj, Vector256.Load(vc + 7 * W), a7);
            }
            var oc = o + c0;
            a0.Store(oc);
            a1.Store(oc + W);
            a2.Store(oc + 2 * W);
            a3.Store(oc + 3 * W);
            a4.Store(oc + 4 * W);
            a5.Store(oc + 5 * W);
            a6.Store(oc + 6 * W);
            a7.Store(oc + 7 * W);
        }
        for (var c = c0; c < hd; c += W)
        {
            Vector256<float> a = default;
            var vc = v + c;
            for (var j = 0; j < n; j++, vc += hd) a = Vector256.FusedMultiplyAdd(Vector256.Create(p[j]), Vector256.Load(vc), a);
            a.Store(o + c);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void WeightedScalar(float* p, int stride, int m, float* v, int n, int hd, float* o, long oStride)
    {
        for (var i = 0; i < m; i++)
        {
            var output = new Span<float>(o + i * oStride, hd);
            for (var j = 0; j < n; j++) TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(v + (long)j * hd, hd), p[(long)i * stride + j], output, output);
        }
    }
}
