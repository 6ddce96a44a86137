using System.Numerics.Tensors;
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
        var units = (int)(rows * heads);
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

    [UnmanagedCallersOnly]
    private static void Attend(void* state, nuint unit) => AttendUnit((Job*)state, (long)unit);

    /// <summary>One (row, head): each of the row's tokens attends over the row's positions up to its own.</summary>
    private static void AttendUnit(Job* job, long unit)
    {
        var r = unit / job->Heads;
        var h = (int)(unit % job->Heads);
        var p = job->Plan;
        long slot = p[1 + 4 * r], start = p[2 + 4 * r], first = p[3 + 4 * r], count = p[4 + 4 * r];
        int hd = job->HeadDim, kvh = h / (job->Heads / job->KvHeads);
        var keys = job->KCache + ((slot * job->KvHeads + kvh) * job->Context) * hd;
        var values = job->VCache + ((slot * job->KvHeads + kvh) * job->Context) * hd;
        var length = (int)(start + count);
        var scores = length <= 4096 ? stackalloc float[length] : new float[length];
        for (long t = 0; t < count; t++)
        {
            var n = (int)(start + t + 1);
            var lo = job->Window > 0 ? Math.Max(0, n - job->Window) : 0; // a sliding window keeps the last Window positions
            var query = new ReadOnlySpan<float>(job->Q + ((first + t) * job->Heads + h) * hd, hd);
            var s = scores[lo..n];
            for (var j = lo; j < n; j++) s[j - lo] = TensorPrimitives.Dot(query, new ReadOnlySpan<float>(keys + (long)j * hd, hd)) * job->Scale;
            if (job->Softcap > 0)
            {
                TensorPrimitives.Multiply(s, 1f / job->Softcap, s);
                TensorPrimitives.Tanh(s, s);
                TensorPrimitives.Multiply(s, job->Softcap, s);
            }
            var max = TensorPrimitives.Max(s);
            TensorPrimitives.Subtract(s, max, s);
            TensorPrimitives.Exp(s, s);
            var inv = 1f / TensorPrimitives.Sum(s);
            var o = new Span<float>(job->Out + ((first + t) * job->Heads + h) * hd, hd);
            for (var j = lo; j < n; j++) TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(values + (long)j * hd, hd), s[j - lo] * inv, o, o);
        }
    }
}
