using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Microsoft.ML.OnnxRuntime;
using Serving.Inference.Runtime;
using static Serving.Inference.Runtime.CustomOpAbi;

namespace Serving.Inference.Numerics;

/// <summary>
/// <c>serving.norm::SkipLayerNorm</c>, an ONNX Runtime CPU custom operator written in C#: the residual sum and its
/// LayerNorm in one node, as <c>com.microsoft::SkipLayerNormalization</c> computes them, vectorised. ONNX Runtime's
/// CPU kernel of that op runs each row in scalar loops (a division per element; the variance as E[s²] − mean²):
/// 63–67 µs for 32 rows of 768 on this machine, where its own <c>LayerNormalization</c> takes 8–13 µs and this
/// operator ~11 µs (docs/benchmarks.md, issue 17, session 14). The fp32 CPU blocks of LayerNorm models (GPT-2) use
/// it (<see cref="Graphs.BlockGraph.SkipNorm"/>); RMSNorm models, fp16 and CUDA graphs keep the contrib op.
/// <para>
/// Inputs: <c>x</c> and <c>skip</c> [..., d], <c>gamma</c>, <c>beta</c> and <c>bias</c> [d], <c>epsilon</c> [1].
/// Outputs: <c>normed</c> = (s − mean(s)) / √(var(s) + ε) · γ + β and <c>sum</c> = s = x + skip + bias, per row of d
/// (population variance, computed from the centred row).
/// </para>
/// </summary>
internal static unsafe class SkipLayerNormOp
{
    public const string Domain = "serving.norm";
    public const string Name = "SkipLayerNorm";
    public const int InputCount = 6;
    public const int OutputCount = 2;
    private const long InlineElements = 1 << 16; // rows × d under which the node runs on the calling thread

    private static readonly CustomOpDomain Ops = new(Domain, () =>
    {
        // v16: CreateKernelV2 / KernelComputeV2 (errors as statuses); v17: shape inference (the nodes after it need ranks).
        var op = NewCpuOp(Name, 17, InputCount, int64Inputs: 0, &KernelCompute, &KernelComputeV2, OutputCount);
        op->InferOutputShapeFn = &InferOutputShape;
        return (nint)op;
    });

    /// <summary>Both outputs have x's type and shape.</summary>
    [UnmanagedCallersOnly]
    private static nint InferOutputShape(OrtCustomOp* op, nint context)
    {
        var status = OrtNativeApi.ShapeLikeInput(context, 0, 0);
        return status != 0 ? status : OrtNativeApi.ShapeLikeInput(context, 0, 1);
    }

    /// <summary>
    /// Adds the <see cref="Domain"/> operators to <paramref name="options"/> (CPU provider). Every CPU session's options
    /// already have them (<see cref="OrtRuntime.CreateSessionOptions"/>); a second registration on one options object fails.
    /// </summary>
    public static void Register(SessionOptions options) => Ops.Register(options);

    [UnmanagedCallersOnly] private static void KernelCompute(nint kernel, nint context) => ComputeV1(Name, &Compute, context);
    [UnmanagedCallersOnly] private static nint KernelComputeV2(nint kernel, nint context) => ComputeV2(Name, &Compute, context);

    private static nint Invalid(string message) => InvalidArgument(Name, message);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static nint Compute(nint context)
    {
        Span<long> xDims = stackalloc long[8], sDims = stackalloc long[8], gDims = stackalloc long[8], bDims = stackalloc long[8];
        Span<long> biasDims = stackalloc long[8], eDims = stackalloc long[8];
        nint s;
        if ((s = OrtNativeApi.Input(context, 0, out var x, xDims, out var xRank)) != 0) return s;
        if ((s = OrtNativeApi.Input(context, 1, out var skip, sDims, out var sRank)) != 0) return s;
        if ((s = OrtNativeApi.Input(context, 2, out var gamma, gDims, out var gRank)) != 0) return s;
        if ((s = OrtNativeApi.Input(context, 3, out var beta, bDims, out var bRank)) != 0) return s;
        if ((s = OrtNativeApi.Input(context, 4, out var bias, biasDims, out var biasRank)) != 0) return s;
        if ((s = OrtNativeApi.Input(context, 5, out var epsilon, eDims, out var eRank)) != 0) return s;
        if (xRank < 1 || sRank != xRank) return Invalid($"x and skip must be [..., d] of one rank; got ranks {xRank}, {sRank}");
        long rows = 1;
        for (var i = 0; i < xRank; i++)
        {
            if (sDims[i] != xDims[i]) return Invalid("x and skip differ in shape");
            if (i < xRank - 1) rows *= xDims[i];
        }
        var d = xDims[xRank - 1];
        if (d <= 0 || d > int.MaxValue) return Invalid($"row width {d} out of range");
        if (gRank != 1 || gDims[0] != d || bRank != 1 || bDims[0] != d || biasRank != 1 || biasDims[0] != d)
        {
            return Invalid($"gamma, beta and bias must each be [{d}]");
        }
        if (eRank != 1 || eDims[0] != 1) return Invalid("epsilon must be float [1]");
        var eps = *(float*)epsilon;
        if (!(eps > 0)) return Invalid($"epsilon {eps} must be positive");
        if ((s = OrtNativeApi.Output(context, 0, xDims[..xRank], out var normed)) != 0) return s;
        if ((s = OrtNativeApi.Output(context, 1, xDims[..xRank], out var sum)) != 0) return s;
        var job = new Job
        {
            X = (float*)x, Skip = (float*)skip, Gamma = (float*)gamma, Beta = (float*)beta, Bias = (float*)bias,
            Normed = (float*)normed, Sum = (float*)sum, Width = (int)d, Epsilon = eps,
        };
        if (rows * d < InlineElements || rows == 1)
        {
            for (long r = 0; r < rows; r++) Row(&job, r);
            return 0;
        }
        return OrtNativeApi.ParallelFor(context, &RowUnit, checked((int)rows), Math.Max(1, OrtRuntime.Threads), &job);
    }

    private struct Job
    {
        public float* X, Skip, Gamma, Beta, Bias, Normed, Sum;
        public int Width;
        public float Epsilon;
    }

    // Fully optimised from the first call: a helper called from native code can otherwise sit at tier 0 for seconds.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    [UnmanagedCallersOnly]
    private static void RowUnit(void* state, nuint row) => Row((Job*)state, (long)row);

    /// <summary>
    /// One row in three passes, written out rather than through <c>TensorPrimitives</c>: a method of another assembly
    /// called from native code starts at tier 0 and a busy process can keep it there (8 µs per row measured against
    /// 0.33 µs tiered); these loops are compiled optimised on first call.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Row(Job* job, long r)
    {
        var d = job->Width;
        var offset = r * d;
        float* x = job->X + offset, skip = job->Skip + offset, sum = job->Sum + offset, normed = job->Normed + offset;
        float* bias = job->Bias, gamma = job->Gamma, beta = job->Beta;
        var width = Vector256<float>.Count;
        var vectors = Vector256.IsHardwareAccelerated ? d - d % width : 0;

        // s = x + skip + bias, and its total
        var acc = Vector256<float>.Zero;
        var i = 0;
        for (; i < vectors; i += width)
        {
            var v = Vector256.Load(x + i) + Vector256.Load(skip + i) + Vector256.Load(bias + i);
            v.Store(sum + i);
            acc += v;
        }
        var total = Vector256.Sum(acc);
        for (; i < d; i++)
        {
            sum[i] = x[i] + skip[i] + bias[i];
            total += sum[i];
        }
        var mean = total / d;

        // centred row (kept in normed) and its sum of squares
        var m = Vector256.Create(mean);
        acc = Vector256<float>.Zero;
        for (i = 0; i < vectors; i += width)
        {
            var c = Vector256.Load(sum + i) - m;
            c.Store(normed + i);
            acc += c * c;
        }
        var squares = Vector256.Sum(acc);
        for (; i < d; i++)
        {
            normed[i] = sum[i] - mean;
            squares += normed[i] * normed[i];
        }
        var scale = 1f / MathF.Sqrt(squares / d + job->Epsilon);

        // (centred · scale) · γ + β
        var k = Vector256.Create(scale);
        for (i = 0; i < vectors; i += width)
        {
            (Vector256.Load(normed + i) * k * Vector256.Load(gamma + i) + Vector256.Load(beta + i)).Store(normed + i);
        }
        for (; i < d; i++) normed[i] = normed[i] * scale * gamma[i] + beta[i];
    }
}
