using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Microsoft.ML.OnnxRuntime;
using Serving.Inference.Runtime;
using static Serving.Inference.Runtime.CustomOpAbi;

namespace Serving.Inference.Adapters;

/// <summary>
/// <c>serving.lora::SegmentedLora</c>, an ONNX Runtime CPU custom operator written in C#: the segmented gather
/// matrix–vector product of Punica's SGMV / S-LoRA's MBGMV for CPU. It adds each token's low-rank update to a
/// projection's base output, reading every adapter a step uses once, straight from the slot table's stacked buffers,
/// at that adapter's own rank — no gather of tokens into a padded grid, no compaction of slots, no padding entries.
/// <para>
/// Inputs: <c>y</c> [..., out] (base projection output), <c>x</c> [..., in] (its input; same leading dims),
/// <c>a</c> [S, R, in] and <c>b</c> [S, R, out] (every slot, rank capacity R, scale folded into B), <c>ranks</c>
/// int64 [S] (the rank of each slot position for this projection), <c>plan</c> int64 [P]:
/// <c>G, then G × (slot position, first entry, entry count), then the entries</c> (flat token indices into the
/// leading dims of x, grouped by segment). Output: <c>y + (x·Aᵀ)·B</c> per planned token, <c>y</c> elsewhere.
/// </para>
/// Computation: the planned tokens go in units of up to 4 entries of one segment; each unit computes its entries'
/// <c>h = x·Aᵀ</c> [rank] (shrink: four tokens × four A rows per AVX-512 register block, two × four with AVX2) and
/// then adds <c>h·B</c> to their output rows over every column (expand: four tokens × 32 columns per block, each B
/// load feeding four FMAs), into y's own buffer when ONNX Runtime grants the in-place reuse the operator offers (else
/// into a copy). A token may appear in one segment entry only, so units never write the same row. The units run on
/// the session's intra-op pool (<c>KernelContext_ParallelFor</c>, one dispatch per call, one contiguous batch of units
/// per thread); steps under <see cref="InlineWork"/> multiply-adds run inline. <see cref="SegmentedLoraProfile.TwoPhase"/>
/// runs the same loops as two phases instead (every shrink unit, then every expand unit of 512 columns: the layout
/// before issue #19's round two, kept for comparison). Steps of at most <see cref="SmallStepTokens"/> planned tokens
/// (batch-1 decode) run one fused pass that splits ranks over the pool (<see cref="SmallStep"/>). Phase times are
/// recorded when <see cref="SegmentedLoraProfile.Enabled"/>. Every loop is compiled fully optimised at its first call
/// (<see cref="Hot"/>). A plan that points outside its tensors fails the run with <c>INVALID_ARGUMENT</c>; nothing is
/// read out of bounds.
/// <para>
/// One file of ~740 lines on purpose: a hot kernel whose plan validation, unit scheduling and register-blocked loops
/// share pointer layouts and constants; split across files they would be read apart and tuned apart.
/// </para>
/// </summary>
internal static unsafe class SegmentedLoraOp
{
    public const string Domain = "serving.lora";
    public const string Name = "SegmentedLora";
    public const int InputCount = 6;

    private const int RowsPerUnit = 4;   // rank rows of A per dot-product pass
    private const int TokensPerUnit = 4; // entries of one segment per unit (A and B rows are reused across them)
    private const int ColumnBlock = 512; // output columns per expand unit
    private const long InlineWork = 1 << 18;
    private const int SmallStepTokens = 2;    // planned tokens up to which a step takes the fused small-step pass
    private const int SmallStepMaxRank = 1024; // rank capacity up to which h of one token fits the small pass's stack
    private const long SmallStepPoolWork = 1 << 14; // multiply-adds from which the small pass splits ranks over the pool

    // The loops below run fully optimised from their first call: under tiered compilation a helper called from the
    // operator would start at tier 0 (no inlining, vectors spilled to the stack) and a busy process may keep it there
    // for seconds (the call-counting delay restarts with every new tier-0 method; found in the ComPEFT decoder).
    private const MethodImplOptions Hot = MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization;

    private static readonly CustomOpDomain Ops = new(Domain, () =>
    {
        // v16: CreateKernelV2 / KernelComputeV2 (errors as statuses); v18: MayInplace. Inputs 4 and 5 (ranks, plan) are int64.
        var op = NewCpuOp(Name, 18, InputCount, int64Inputs: (1UL << 4) | (1UL << 5), &KernelCompute, &KernelComputeV2);
        op->InferOutputShapeFn = &InferOutputShape;
        op->GetMayInplace = &GetMayInplace;
        op->ReleaseMayInplace = &ReleaseMap;
        op->GetAliasMap = &GetAliasMap;
        op->ReleaseAliasMap = &ReleaseMap;
        return (nint)op;
    });

    /// <summary>Adds the <see cref="Domain"/> operators to <paramref name="options"/> (CPU provider).</summary>
    public static void Register(SessionOptions options) => Ops.Register(options);

    /// <summary>The output has y's type and shape (ONNX Runtime's planner needs the shape to grant the in-place reuse).</summary>
    [UnmanagedCallersOnly]
    private static nint InferOutputShape(OrtCustomOp* op, nint context) => OrtNativeApi.ShapeLikeInput(context, 0, 0);

    /// <summary>Output 0 may reuse input 0 (y): the update is then added in place and the copy of y is skipped.</summary>
    [UnmanagedCallersOnly]
    private static nuint GetMayInplace(int** inputIndex, int** outputIndex)
    {
        var input = (int*)NativeMemory.Alloc(sizeof(int));
        var output = (int*)NativeMemory.Alloc(sizeof(int));
        *input = 0;
        *output = 0;
        *inputIndex = input;
        *outputIndex = output;
        return 1;
    }

    [UnmanagedCallersOnly]
    private static nuint GetAliasMap(int** inputIndex, int** outputIndex)
    {
        *inputIndex = null;
        *outputIndex = null;
        return 0;
    }

    [UnmanagedCallersOnly]
    private static void ReleaseMap(int* inputIndex, int* outputIndex)
    {
        NativeMemory.Free(inputIndex);
        NativeMemory.Free(outputIndex);
    }

    [UnmanagedCallersOnly] private static void KernelCompute(nint kernel, nint context) => ComputeV1(Name, &Compute, context);
    [UnmanagedCallersOnly] private static nint KernelComputeV2(nint kernel, nint context) => ComputeV2(Name, &Compute, context);

    private static long _computes;
    private static long _inPlace;

    /// <summary>Runs of the operator in this process, and how many of them ONNX Runtime ran in place (diagnostics).</summary>
    internal static (long Runs, long InPlace) Counts => (Interlocked.Read(ref _computes), Interlocked.Read(ref _inPlace));

    private static nint Invalid(string message) => InvalidArgument(Name, message);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static nint Compute(nint context)
    {
        var profile = SegmentedLoraProfile.Enabled;
        var t0 = profile ? Stopwatch.GetTimestamp() : 0;
        Span<long> yDims = stackalloc long[8], xDims = stackalloc long[8], aDims = stackalloc long[8], bDims = stackalloc long[8];
        Span<long> rDims = stackalloc long[8], pDims = stackalloc long[8];
        nint s;
        if ((s = OrtNativeApi.Input(context, 0, out var y, yDims, out var yRank)) != 0) return s;
        if ((s = OrtNativeApi.Input(context, 1, out var x, xDims, out var xRank)) != 0) return s;
        if ((s = OrtNativeApi.Input(context, 2, out var a, aDims, out var aRank)) != 0) return s;
        if ((s = OrtNativeApi.Input(context, 3, out var b, bDims, out var bRank)) != 0) return s;
        if ((s = OrtNativeApi.Input(context, 4, out var ranks, rDims, out var rRank)) != 0) return s;
        if ((s = OrtNativeApi.Input(context, 5, out var plan, pDims, out var pRank)) != 0) return s;
        if (yRank < 1 || xRank != yRank || aRank != 3 || bRank != 3 || rRank != 1 || pRank != 1)
        {
            return Invalid($"expected y [..., out], x [..., in] of the same rank, a/b [S, R, ·], ranks [S], plan [P]; got ranks {yRank}, {xRank}, {aRank}, {bRank}, {rRank}, {pRank}");
        }
        long tokens = 1;
        for (var i = 0; i < yRank - 1; i++)
        {
            if (yDims[i] != xDims[i]) return Invalid("x and y differ in their leading dimensions");
            tokens *= yDims[i];
        }
        long inDim = xDims[xRank - 1], outDim = yDims[yRank - 1], slots = aDims[0], capacity = aDims[1];
        if (aDims[2] != inDim || bDims[2] != outDim || bDims[0] != slots || bDims[1] != capacity || rDims[0] != slots)
        {
            return Invalid($"a [{aDims[0]}, {aDims[1]}, {aDims[2]}] and b [{bDims[0]}, {bDims[1]}, {bDims[2]}] do not match in {inDim}, out {outDim}, ranks [{rDims[0]}]");
        }
        var planLength = pDims[0];
        var p = (long*)plan;
        var groups = planLength > 0 ? p[0] : -1;
        if (groups < 0 || 1 + 3 * groups > planLength) return Invalid($"plan of length {planLength} cannot hold {groups} segments");
        var entries = planLength - 1 - 3 * groups;
        var order = p + 1 + 3 * groups;
        var rank = (long*)ranks;
        long units = 0, expandUnits = 0, work = 0, planned = 0;
        for (long g = 0; g < groups; g++)
        {
            long position = p[1 + 3 * g], start = p[2 + 3 * g], count = p[3 + 3 * g];
            if ((ulong)position >= (ulong)slots) return Invalid($"segment {g}: slot position {position} outside [0, {slots})");
            if ((ulong)rank[position] > (ulong)capacity) return Invalid($"slot position {position}: rank {rank[position]} outside [0, {capacity}]");
            if (start < 0 || count < 0 || start + count > entries) return Invalid($"segment {g}: entries [{start}, {start + count}) outside the plan's {entries}");
            for (var e = start; e < start + count; e++)
            {
                if ((ulong)order[e] >= (ulong)tokens) return Invalid($"segment {g}: token {order[e]} outside [0, {tokens})");
            }
            units += (count + TokensPerUnit - 1) / TokensPerUnit;
            if (count > 0 && rank[position] > 0) expandUnits += (outDim + ColumnBlock - 1) / ColumnBlock;
            work += count * rank[position];
            planned += count;
        }
        work *= inDim + outDim; // multiply-adds of both phases

        if ((s = OrtNativeApi.Output(context, 0, yDims[..yRank], out var output)) != 0) return s;
        Interlocked.Increment(ref _computes);
        if (output == y) Interlocked.Increment(ref _inPlace);

        // Steps of one or two tokens (batch-1 decode) take one fused pass, inline: no h buffer, no unit lists, no pool
        // dispatch (issue #19: measured against the two phases in AdapterBench --only p --compare-general).
        var small = planned <= SmallStepTokens && capacity <= SmallStepMaxRank && !SegmentedLoraProfile.GeneralPathOnly;

        // General path: h [entries, capacity], the shrink units (segment, first entry, entries) [units, 3], the expand
        // units (segment, first column) [expandUnits, 2]; both paths: a byte per token (each in at most one segment).
        var slices = small && work >= SmallStepPoolWork && !SegmentedLoraProfile.SmallStepInline ? Math.Max(1, OrtRuntime.Threads) : 1;
        var hBytes = small ? 0 : entries * capacity * sizeof(float);
        var listBytes = small ? (slices - 1) * planned * outDim * sizeof(float) : (3 * units + 2 * expandUnits) * sizeof(long);
        var scratch = (byte*)NativeMemory.Alloc((nuint)(hBytes + listBytes + tokens));
        try
        {
            var seen = scratch + hBytes + listBytes;
            new Span<byte>(seen, (int)tokens).Clear();
            for (long g = 0; g < groups; g++)
            {
                for (long e = p[2 + 3 * g], end = e + p[3 + 3 * g]; e < end; e++)
                {
                    if (seen[order[e]]++ != 0) return Invalid($"token {order[e]} appears in more than one segment entry");
                }
            }
            var job = new Job
            {
                X = (float*)x, Y = (float*)y, Out = (float*)output, A = (float*)a, B = (float*)b, Ranks = rank, Plan = p,
                Order = order, H = (float*)scratch, Units = (long*)(scratch + hBytes),
                In = (int)inDim, OutDim = (int)outDim, Capacity = (int)capacity, Groups = (int)groups, Tokens = tokens,
            };
            if (output != y) // not in place (ONNX Runtime decides; see GetMayInplace): start from a copy of y
            {
                Buffer.MemoryCopy(y, output, tokens * outDim * sizeof(float), tokens * outDim * sizeof(float));
            }
            if (small)
            {
                job.Slices = slices;
                job.Planned = (int)planned;
                job.Partial = (float*)scratch;
                var ts = profile ? Stopwatch.GetTimestamp() : 0;
                if ((s = Run(context, &SmallStep, slices, &job, pool: true)) != 0) return s;
                MergeSlices(&job);
                if (profile) Record(t0, ts, ts, Stopwatch.GetTimestamp(), slices > 1 ? 1 : 0, outDim, output != y, tokens, &job);
                return 0;
            }
            job.ExpandUnits = job.Units + 3 * units;
            long* u = job.Units, v = job.ExpandUnits;
            for (var g = 0; g < groups; g++)
            {
                long start = p[2 + 3 * g], count = p[3 + 3 * g];
                for (long e = start, end = start + count; e < end; e += TokensPerUnit, u += 3)
                {
                    u[0] = g;
                    u[1] = e;
                    u[2] = Math.Min(TokensPerUnit, end - e);
                }
                if (count == 0 || rank[p[1 + 3 * g]] == 0) continue;
                for (long c = 0; c < outDim; c += ColumnBlock, v += 2)
                {
                    v[0] = g;
                    v[1] = c;
                }
            }
            // Small steps run inline: waking the pool costs more than it saves below ~InlineWork multiply-adds.
            var pool = work >= InlineWork;
            if (!SegmentedLoraProfile.TwoPhase)
            {
                // Fused units: the profile books both phases under expand (shrink 0), one dispatch.
                var tf = profile ? Stopwatch.GetTimestamp() : 0;
                if ((s = Run(context, &Fused, (int)units, &job, pool)) != 0) return s;
                if (profile) Record(t0, tf, tf, Stopwatch.GetTimestamp(), pool && units > 1 ? 1 : 0, outDim, output != y, tokens, &job);
                return 0;
            }
            if (!profile)
            {
                if ((s = Run(context, &Shrink, (int)units, &job, pool)) != 0) return s;
                return Run(context, &Expand, (int)expandUnits, &job, pool);
            }
            var t1 = Stopwatch.GetTimestamp();
            if ((s = Run(context, &Shrink, (int)units, &job, pool)) != 0) return s;
            var t2 = Stopwatch.GetTimestamp();
            s = Run(context, &Expand, (int)expandUnits, &job, pool);
            Record(t0, t1, t2, Stopwatch.GetTimestamp(), (pool && units > 1 ? 1 : 0) + (pool && expandUnits > 1 ? 1 : 0), outDim, output != y, tokens, &job);
            return s;
        }
        finally
        {
            NativeMemory.Free(scratch);
        }
    }

    private static void Record(long t0, long t1, long t2, long t3, int dispatches, long outDim, bool copied, long tokens, Job* job)
    {
        long planned = 0, adapterBytes = 0;
        for (var g = 0; g < job->Groups; g++)
        {
            var count = job->Plan[3 + 3 * g];
            planned += count;
            if (count > 0) adapterBytes += job->Ranks[job->Plan[1 + 3 * g]] * (job->In + job->OutDim) * sizeof(float);
        }
        var yBytes = (2 * planned + (copied ? 2 * tokens : 0)) * outDim * sizeof(float);
        SegmentedLoraProfile.Add(t1 - t0, t2 - t1, t3 - t2, dispatches, planned, yBytes, adapterBytes, copied);
    }

    private static nint Run(nint context, delegate* unmanaged<void*, nuint, void> fn, int units, Job* job, bool pool)
    {
        if (units <= 1 || !pool)
        {
            for (var u = 0; u < units; u++) fn(job, (nuint)u);
            return 0;
        }
        // One contiguous batch of units per pool thread: the units of a phase cost about the same.
        return OrtNativeApi.ParallelFor(context, fn, units, Math.Max(1, OrtRuntime.Threads), job);
    }

    private struct Job
    {
        public float* X, Y, Out, A, B, H;
        public long* Ranks, Plan, Order;
        public long* Units;       // [units, 3]: segment, first entry, entries (≤ TokensPerUnit)
        public long* ExpandUnits; // [expand units, 2]: segment, first column
        public int In, OutDim, Capacity, Groups;
        public long Tokens;
        public int Planned;
        public float* Partial; // small pass: the updates of rank slices 1.. [Slices - 1, planned tokens, OutDim]
        public int Slices;
    }

    /// <summary>
    /// Small-step pass (one or two planned tokens), rank slice <paramref name="slice"/> of the job's slices: for each
    /// token, h = x·A[slice]ᵀ, then h·B[slice] added to the token's output row (slice 0) or written to this slice's
    /// partial row (added by <see cref="MergeSlices"/>). Every A and B row a step uses is read by one thread only.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    [UnmanagedCallersOnly]
    private static void SmallStep(void* state, nuint slice)
    {
        var job = (Job*)state;
        int t = (int)slice, n = job->In, width = job->OutDim, capacity = job->Capacity;
        var h = stackalloc float[capacity];
        var plan = job->Plan;
        var k = 0; // planned token index (plan order), for the partial rows
        for (var g = 0; g < job->Groups; g++)
        {
            long position = plan[1 + 3 * g], start = plan[2 + 3 * g], count = plan[3 + 3 * g];
            var rank = (int)job->Ranks[position];
            int j0 = rank * t / job->Slices, r = rank * (t + 1) / job->Slices - j0;
            var a = job->A + (position * capacity + j0) * n;
            var b = job->B + (position * capacity + j0) * width;
            for (var e = start; e < start + count; e++, k++)
            {
                var token = job->Order[e];
                var target = t == 0 ? job->Out + token * width : job->Partial + ((long)(t - 1) * job->Planned + k) * width;
                if (t > 0) new Span<float>(target, width).Clear();
                if (r == 0) continue;
                var xRow = job->X + token * n;
                var j = 0;
                for (; j + RowsPerUnit <= r; j += RowsPerUnit) Dot4(xRow, a + (long)j * n, n, h + j);
                for (; j < r; j++) h[j] = Dot(xRow, a + (long)j * n, n);
                AddRow(h, r, b, width, target, width);
            }
        }
    }

    /// <summary>After a split small pass: adds the partial rows of slices 1.. to their tokens' outputs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void MergeSlices(Job* job)
    {
        int width = job->OutDim, k = 0;
        if (job->Slices == 1) return;
        for (var g = 0; g < job->Groups; g++)
        {
            for (long e = job->Plan[2 + 3 * g], end = e + job->Plan[3 + 3 * g]; e < end; e++, k++)
            {
                var row = new Span<float>(job->Out + job->Order[e] * width, width);
                for (var t = 1; t < job->Slices; t++)
                {
                    var partial = new ReadOnlySpan<float>(job->Partial + ((long)(t - 1) * job->Planned + k) * width, width);
                    System.Numerics.Tensors.TensorPrimitives.Add(row, partial, row);
                }
            }
        }
    }

    /// <summary>
    /// Fused unit (the default general path): up to <see cref="TokensPerUnit"/> entries of one segment, both phases —
    /// h = x·Aᵀ for the entries, then h·B added to their output rows over every column. One pool dispatch per call
    /// instead of two, and no wait between the phases: a unit's rows depend on its own h only.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    [UnmanagedCallersOnly]
    private static void Fused(void* state, nuint unit)
    {
        var job = (Job*)state;
        var u = job->Units + 3 * (long)unit;
        ShrinkEntries(job, (int)u[0], u[1], u[2]);
        ExpandEntries(job, (int)u[0], u[1], u[2], 0, job->OutDim);
    }

    /// <summary>Shrink unit (two-phase path): h[e, 0..rank) = x[order[e]] · A[position, 0..rank)ᵀ for up to 4 entries of one segment.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    [UnmanagedCallersOnly]
    private static void Shrink(void* state, nuint unit)
    {
        var job = (Job*)state;
        var u = job->Units + 3 * (long)unit;
        ShrinkEntries(job, (int)u[0], u[1], u[2]);
    }

    /// <summary>
    /// Expand unit (two-phase path): one segment × one block of output columns, for every entry of the segment. B's
    /// rows are read as sequential 2 KB runs (prefetch-friendly), once per unit, and reused by all the segment's tokens.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    [UnmanagedCallersOnly]
    private static void Expand(void* state, nuint unit)
    {
        var job = (Job*)state;
        var v = job->ExpandUnits + 2 * (long)unit;
        var g = (int)v[0];
        var c0 = (int)v[1];
        ExpandEntries(job, g, job->Plan[2 + 3 * g], job->Plan[3 + 3 * g], c0, Math.Min(ColumnBlock, job->OutDim - c0));
    }

    /// <summary>h[e, 0..rank) = x[order[e]] · A[position, 0..rank)ᵀ for entries [first, first + count) of segment g.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ShrinkEntries(Job* job, int g, long first, long count)
    {
        var position = job->Plan[1 + 3 * g];
        var rank = (int)job->Ranks[position];
        int n = job->In, capacity = job->Capacity;
        var a = job->A + position * capacity * n;
        var e = first;
        if (Vector512.IsHardwareAccelerated)
        {
            for (; e + 4 <= first + count; e += 4)
            {
                float* x0 = job->X + job->Order[e] * n, x1 = job->X + job->Order[e + 1] * n;
                float* x2 = job->X + job->Order[e + 2] * n, x3 = job->X + job->Order[e + 3] * n;
                var h = job->H + e * capacity;
                var j = 0;
                for (; j + RowsPerUnit <= rank; j += RowsPerUnit) Dot4x4(x0, x1, x2, x3, a + (long)j * n, n, h + j, capacity);
                for (; j < rank; j++)
                {
                    var row = a + (long)j * n;
                    h[j] = Dot(x0, row, n);
                    h[capacity + j] = Dot(x1, row, n);
                    h[2 * capacity + j] = Dot(x2, row, n);
                    h[3 * capacity + j] = Dot(x3, row, n);
                }
            }
        }
        for (; e + 2 <= first + count; e += 2)
        {
            float* x0 = job->X + job->Order[e] * n, x1 = job->X + job->Order[e + 1] * n;
            float* h0 = job->H + e * capacity, h1 = h0 + capacity;
            var j = 0;
            for (; j + RowsPerUnit <= rank; j += RowsPerUnit) Dot2x4(x0, x1, a + (long)j * n, n, h0 + j, h1 + j);
            for (; j < rank; j++)
            {
                h0[j] = Dot(x0, a + (long)j * n, n);
                h1[j] = Dot(x1, a + (long)j * n, n);
            }
        }
        for (; e < first + count; e++)
        {
            var xRow = job->X + job->Order[e] * n;
            var h = job->H + e * capacity;
            var j = 0;
            for (; j + RowsPerUnit <= rank; j += RowsPerUnit) Dot4(xRow, a + (long)j * n, n, h + j);
            for (; j < rank; j++) h[j] = Dot(xRow, a + (long)j * n, n);
        }
    }

    /// <summary>
    /// out[t, c0..c0 + cols) += h[e]·B[position, :, c0..c0 + cols) for entries [first, first + count) of segment g (t
    /// the entry's token); a token is in one segment entry only, so callers never write the same row twice.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ExpandEntries(Job* job, int g, long first, long count, int c0, int cols)
    {
        int width = job->OutDim, capacity = job->Capacity;
        var position = job->Plan[1 + 3 * g];
        var rank = (int)job->Ranks[position];
        if (rank == 0) return;
        var bBlock = job->B + position * capacity * width + c0;
        var o = job->Out + c0;
        var e = first;
        for (; e + 4 <= first + count; e += 4)
        {
            AddRows4(job->H + e * capacity, capacity, rank, bBlock, width, o + job->Order[e] * width, o + job->Order[e + 1] * width,
                o + job->Order[e + 2] * width, o + job->Order[e + 3] * width, cols);
        }
        for (; e < first + count; e++)
        {
            AddRow(job->H + e * capacity, rank, bBlock, width, o + job->Order[e] * width, cols);
        }
    }

    /// <summary>out[0..cols) += Σ_j h[j] · b[j * stride + 0..cols).</summary>
    [MethodImpl(Hot)]
    private static void AddRow(float* h, int rank, float* b, int stride, float* output, int cols)
    {
        var c = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; c + 16 <= cols; c += 16)
            {
                var acc0 = Vector256.Load(output + c);
                var acc1 = Vector256.Load(output + c + 8);
                var row = b + c;
                for (var j = 0; j < rank; j++, row += stride)
                {
                    var hj = Vector256.Create(h[j]);
                    acc0 = MulAdd(hj, Vector256.Load(row), acc0);
                    acc1 = MulAdd(hj, Vector256.Load(row + 8), acc1);
                }
                acc0.Store(output + c);
                acc1.Store(output + c + 8);
            }
        }
        for (; c < cols; c++)
        {
            var sum = output[c];
            for (var j = 0; j < rank; j++) sum += h[j] * b[(long)j * stride + c];
            output[c] = sum;
        }
    }

    /// <summary>As <see cref="AddRow"/> for four outputs at once (h rows <paramref name="hStride"/> apart): each B load feeds four FMAs.</summary>
    [MethodImpl(Hot)]
    private static void AddRows4(float* h, int hStride, int rank, float* b, int stride, float* o0, float* o1, float* o2, float* o3, int cols)
    {
        var c = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            // 4 tokens × 32 columns: eight accumulators, each pair of B loads feeding eight FMAs.
            float* h1 = h + hStride, h2 = h + 2 * hStride, h3 = h + 3 * hStride;
            for (; c + 32 <= cols; c += 32)
            {
                Vector512<float> a00 = Vector512.Load(o0 + c), a01 = Vector512.Load(o0 + c + 16);
                Vector512<float> a10 = Vector512.Load(o1 + c), a11 = Vector512.Load(o1 + c + 16);
                Vector512<float> a20 = Vector512.Load(o2 + c), a21 = Vector512.Load(o2 + c + 16);
                Vector512<float> a30 = Vector512.Load(o3 + c), a31 = Vector512.Load(o3 + c + 16);
                var row = b + c;
                for (var j = 0; j < rank; j++, row += stride)
                {
                    var b0 = Vector512.Load(row);
                    var b1 = Vector512.Load(row + 16);
                    var v = Vector512.Create(h[j]);
                    a00 = Vector512.FusedMultiplyAdd(v, b0, a00);
                    a01 = Vector512.FusedMultiplyAdd(v, b1, a01);
                    v = Vector512.Create(h1[j]);
                    a10 = Vector512.FusedMultiplyAdd(v, b0, a10);
                    a11 = Vector512.FusedMultiplyAdd(v, b1, a11);
                    v = Vector512.Create(h2[j]);
                    a20 = Vector512.FusedMultiplyAdd(v, b0, a20);
                    a21 = Vector512.FusedMultiplyAdd(v, b1, a21);
                    v = Vector512.Create(h3[j]);
                    a30 = Vector512.FusedMultiplyAdd(v, b0, a30);
                    a31 = Vector512.FusedMultiplyAdd(v, b1, a31);
                }
                a00.Store(o0 + c);
                a01.Store(o0 + c + 16);
                a10.Store(o1 + c);
                a11.Store(o1 + c + 16);
                a20.Store(o2 + c);
                a21.Store(o2 + c + 16);
                a30.Store(o3 + c);
                a31.Store(o3 + c + 16);
            }
        }
        if (Vector256.IsHardwareAccelerated)
        {
            for (; c + 16 <= cols; c += 16)
            {
                Vector256<float> a00 = Vector256.Load(o0 + c), a01 = Vector256.Load(o0 + c + 8);
                Vector256<float> a10 = Vector256.Load(o1 + c), a11 = Vector256.Load(o1 + c + 8);
                Vector256<float> a20 = Vector256.Load(o2 + c), a21 = Vector256.Load(o2 + c + 8);
                Vector256<float> a30 = Vector256.Load(o3 + c), a31 = Vector256.Load(o3 + c + 8);
                var row = b + c;
                for (var j = 0; j < rank; j++, row += stride)
                {
                    var b0 = Vector256.Load(row);
                    var b1 = Vector256.Load(row + 8);
                    var h0 = Vector256.Create(h[j]);
                    a00 = MulAdd(h0, b0, a00);
                    a01 = MulAdd(h0, b1, a01);
                    var h1 = Vector256.Create(h[hStride + j]);
                    a10 = MulAdd(h1, b0, a10);
                    a11 = MulAdd(h1, b1, a11);
                    var h2 = Vector256.Create(h[2 * hStride + j]);
                    a20 = MulAdd(h2, b0, a20);
                    a21 = MulAdd(h2, b1, a21);
                    var h3 = Vector256.Create(h[3 * hStride + j]);
                    a30 = MulAdd(h3, b0, a30);
                    a31 = MulAdd(h3, b1, a31);
                }
                a00.Store(o0 + c);
                a01.Store(o0 + c + 8);
                a10.Store(o1 + c);
                a11.Store(o1 + c + 8);
                a20.Store(o2 + c);
                a21.Store(o2 + c + 8);
                a30.Store(o3 + c);
                a31.Store(o3 + c + 8);
            }
        }
        if (c < cols)
        {
            AddRow(h, rank, b + c, stride, o0 + c, cols - c);
            AddRow(h + hStride, rank, b + c, stride, o1 + c, cols - c);
            AddRow(h + 2 * hStride, rank, b + c, stride, o2 + c, cols - c);
            AddRow(h + 3 * hStride, rank, b + c, stride, o3 + c, cols - c);
        }
    }

    /// <summary>
    /// h[t · hStride + j] = x_t · a[j]ᵀ for four tokens and the 4 rows of a [4, n] (AVX-512): sixteen accumulators, each
    /// x and A load feeding four FMAs.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot4x4(float* x0, float* x1, float* x2, float* x3, float* a, int n, float* h, int hStride)
    {
        Vector512<float> s00 = default, s01 = default, s02 = default, s03 = default;
        Vector512<float> s10 = default, s11 = default, s12 = default, s13 = default;
        Vector512<float> s20 = default, s21 = default, s22 = default, s23 = default;
        Vector512<float> s30 = default, s31 = default, s32 = default, s33 = default;
        float* a1 = a + n, a2 = a + 2 * n, a3 = a + 3 * n;
        var k = 0;
        for (; k + 16 <= n; k += 16)
        {
            var r0 = Vector512.Load(a + k);
            var r1 = Vector512.Load(a1 + k);
            var r2 = Vector512.Load(a2 + k);
            var r3 = Vector512.Load(a3 + k);
            var u = Vector512.Load(x0 + k);
            s00 = Vector512.FusedMultiplyAdd(u, r0, s00);
            s01 = Vector512.FusedMultiplyAdd(u, r1, s01);
            s02 = Vector512.FusedMultiplyAdd(u, r2, s02);
            s03 = Vector512.FusedMultiplyAdd(u, r3, s03);
            u = Vector512.Load(x1 + k);
            s10 = Vector512.FusedMultiplyAdd(u, r0, s10);
            s11 = Vector512.FusedMultiplyAdd(u, r1, s11);
            s12 = Vector512.FusedMultiplyAdd(u, r2, s12);
            s13 = Vector512.FusedMultiplyAdd(u, r3, s13);
            u = Vector512.Load(x2 + k);
            s20 = Vector512.FusedMultiplyAdd(u, r0, s20);
            s21 = Vector512.FusedMultiplyAdd(u, r1, s21);
            s22 = Vector512.FusedMultiplyAdd(u, r2, s22);
            s23 = Vector512.FusedMultiplyAdd(u, r3, s23);
            u = Vector512.Load(x3 + k);
            s30 = Vector512.FusedMultiplyAdd(u, r0, s30);
            s31 = Vector512.FusedMultiplyAdd(u, r1, s31);
            s32 = Vector512.FusedMultiplyAdd(u, r2, s32);
            s33 = Vector512.FusedMultiplyAdd(u, r3, s33);
        }
        float* h1 = h + hStride, h2 = h + 2 * hStride, h3 = h + 3 * hStride;
        h[0] = Vector512.Sum(s00); h[1] = Vector512.Sum(s01); h[2] = Vector512.Sum(s02); h[3] = Vector512.Sum(s03);
        h1[0] = Vector512.Sum(s10); h1[1] = Vector512.Sum(s11); h1[2] = Vector512.Sum(s12); h1[3] = Vector512.Sum(s13);
        h2[0] = Vector512.Sum(s20); h2[1] = Vector512.Sum(s21); h2[2] = Vector512.Sum(s22); h2[3] = Vector512.Sum(s23);
        h3[0] = Vector512.Sum(s30); h3[1] = Vector512.Sum(s31); h3[2] = Vector512.Sum(s32); h3[3] = Vector512.Sum(s33);
        for (; k < n; k++)
        {
            float r0 = a[k], r1 = a1[k], r2 = a2[k], r3 = a3[k];
            h[0] += x0[k] * r0; h[1] += x0[k] * r1; h[2] += x0[k] * r2; h[3] += x0[k] * r3;
            h1[0] += x1[k] * r0; h1[1] += x1[k] * r1; h1[2] += x1[k] * r2; h1[3] += x1[k] * r3;
            h2[0] += x2[k] * r0; h2[1] += x2[k] * r1; h2[2] += x2[k] * r2; h2[3] += x2[k] * r3;
            h3[0] += x3[k] * r0; h3[1] += x3[k] * r1; h3[2] += x3[k] * r2; h3[3] += x3[k] * r3;
        }
    }

    /// <summary>h0[0..4) = x0 · a[j]ᵀ and h1[0..4) = x1 · a[j]ᵀ for the 4 rows of a [4, n]: each A load feeds two FMAs.</summary>
    [MethodImpl(Hot)]
    private static void Dot2x4(float* x0, float* x1, float* a, int n, float* h0, float* h1)
    {
        var k = 0;
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0, t0 = 0, t1 = 0, t2 = 0, t3 = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            Vector256<float> p0 = default, p1 = default, p2 = default, p3 = default;
            Vector256<float> q0 = default, q1 = default, q2 = default, q3 = default;
            for (; k + 8 <= n; k += 8)
            {
                var u = Vector256.Load(x0 + k);
                var v = Vector256.Load(x1 + k);
                var r0 = Vector256.Load(a + k);
                p0 = MulAdd(u, r0, p0);
                q0 = MulAdd(v, r0, q0);
                var r1 = Vector256.Load(a + n + k);
                p1 = MulAdd(u, r1, p1);
                q1 = MulAdd(v, r1, q1);
                var r2 = Vector256.Load(a + 2 * n + k);
                p2 = MulAdd(u, r2, p2);
                q2 = MulAdd(v, r2, q2);
                var r3 = Vector256.Load(a + 3 * n + k);
                p3 = MulAdd(u, r3, p3);
                q3 = MulAdd(v, r3, q3);
            }
            s0 = Vector256.Sum(p0);
            s1 = Vector256.Sum(p1);
            s2 = Vector256.Sum(p2);
            s3 = Vector256.Sum(p3);
            t0 = Vector256.Sum(q0);
            t1 = Vector256.Sum(q1);
            t2 = Vector256.Sum(q2);
            t3 = Vector256.Sum(q3);
        }
        for (; k < n; k++)
        {
            s0 += x0[k] * a[k];
            s1 += x0[k] * a[n + k];
            s2 += x0[k] * a[2 * n + k];
            s3 += x0[k] * a[3 * n + k];
            t0 += x1[k] * a[k];
            t1 += x1[k] * a[n + k];
            t2 += x1[k] * a[2 * n + k];
            t3 += x1[k] * a[3 * n + k];
        }
        h0[0] = s0;
        h0[1] = s1;
        h0[2] = s2;
        h0[3] = s3;
        h1[0] = t0;
        h1[1] = t1;
        h1[2] = t2;
        h1[3] = t3;
    }

    /// <summary>h[0..4) = x · a[j]ᵀ for the 4 rows of a [4, n].</summary>
    [MethodImpl(Hot)]
    private static void Dot4(float* x, float* a, int n, float* h)
    {
        var k = 0;
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            Vector256<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
            for (; k + 8 <= n; k += 8)
            {
                var xv = Vector256.Load(x + k);
                acc0 = MulAdd(xv, Vector256.Load(a + k), acc0);
                acc1 = MulAdd(xv, Vector256.Load(a + n + k), acc1);
                acc2 = MulAdd(xv, Vector256.Load(a + 2 * n + k), acc2);
                acc3 = MulAdd(xv, Vector256.Load(a + 3 * n + k), acc3);
            }
            s0 = Vector256.Sum(acc0);
            s1 = Vector256.Sum(acc1);
            s2 = Vector256.Sum(acc2);
            s3 = Vector256.Sum(acc3);
        }
        for (; k < n; k++)
        {
            s0 += x[k] * a[k];
            s1 += x[k] * a[n + k];
            s2 += x[k] * a[2 * n + k];
            s3 += x[k] * a[3 * n + k];
        }
        h[0] = s0;
        h[1] = s1;
        h[2] = s2;
        h[3] = s3;
    }

    private static float Dot(float* x, float* a, int n) =>
        System.Numerics.Tensors.TensorPrimitives.Dot(new ReadOnlySpan<float>(x, n), new ReadOnlySpan<float>(a, n));

    [MethodImpl(Hot)]
    private static Vector256<float> MulAdd(Vector256<float> x, Vector256<float> y, Vector256<float> addend) =>
        Fma.IsSupported ? Fma.MultiplyAdd(x, y, addend) : x * y + addend;
}
