using System.Runtime.InteropServices;

namespace Serving.Inference.Runtime;

/// <summary>
/// The few entries of ONNX Runtime's C API table (<c>OrtApi</c>) that a custom operator written in C# needs, called
/// through function pointers: the managed package does not expose the table. Indices are positions in
/// <c>struct OrtApi</c> of <c>onnxruntime_c_api.h</c> (append-only across versions; checked against 1.31's header).
/// Every status-returning call returns an <c>OrtStatus*</c> (0 = success).
/// </summary>
internal static unsafe class OrtNativeApi
{
    /// <summary>API version requested: 17 has <c>KernelContext_ParallelFor</c> and every entry used here.</summary>
    public const uint Version = 17;

    public const int ErrorFail = 1;            // ORT_FAIL
    public const int ErrorInvalidArgument = 2; // ORT_INVALID_ARGUMENT

    private const int CreateStatusIndex = 0;
    private const int GetErrorMessageIndex = 2;
    private const int CreateCustomOpDomainIndex = 26;
    private const int CustomOpDomainAddIndex = 27;
    private const int AddCustomOpDomainIndex = 28;
    private const int GetTensorMutableDataIndex = 51;
    private const int GetDimensionsCountIndex = 61;
    private const int GetDimensionsIndex = 62;
    private const int GetTensorTypeAndShapeIndex = 65;
    private const int KernelContextGetInputIndex = 90;
    private const int KernelContextGetOutputIndex = 91;
    private const int ReleaseStatusIndex = 93;
    private const int ReleaseTensorTypeAndShapeInfoIndex = 99;
    private const int ShapeInferGetInputTypeShapeIndex = 268;
    private const int ShapeInferSetOutputTypeShapeIndex = 270;
    private const int KernelContextParallelForIndex = 274;

    private static readonly nint* Table = LoadTable();

    /// <summary>The <c>OrtApi*</c> itself (what custom op callbacks receive).</summary>
    public static nint Pointer => (nint)Table;

    [DllImport("onnxruntime", EntryPoint = "OrtGetApiBase")]
    private static extern nint* OrtGetApiBase();

    private static nint* LoadTable()
    {
        var apiBase = OrtGetApiBase(); // struct OrtApiBase { GetApi(version); GetVersionString(); }
        var getApi = (delegate* unmanaged<uint, nint*>)apiBase[0];
        var table = getApi(Version);
        if (table is null) throw new NotSupportedException($"the loaded ONNX Runtime does not provide C API version {Version}");
        return table;
    }

    public static nint CreateStatus(int code, string message)
    {
        var text = Marshal.StringToCoTaskMemUTF8(message);
        try
        {
            return ((delegate* unmanaged<int, nint, nint>)Table[CreateStatusIndex])(code, text);
        }
        finally
        {
            Marshal.FreeCoTaskMem(text);
        }
    }

    /// <summary>Throws <see cref="InvalidOperationException"/> with ONNX Runtime's message when <paramref name="status"/> is an error.</summary>
    public static void Check(nint status)
    {
        if (status == 0) return;
        var message = Marshal.PtrToStringUTF8(((delegate* unmanaged<nint, nint>)Table[GetErrorMessageIndex])(status));
        ((delegate* unmanaged<nint, void>)Table[ReleaseStatusIndex])(status);
        throw new InvalidOperationException($"ONNX Runtime: {message}");
    }

    public static nint CreateCustomOpDomain(string domain)
    {
        var name = Marshal.StringToCoTaskMemUTF8(domain); // ORT copies the name
        try
        {
            nint result;
            Check(((delegate* unmanaged<nint, nint*, nint>)Table[CreateCustomOpDomainIndex])(name, &result));
            return result;
        }
        finally
        {
            Marshal.FreeCoTaskMem(name);
        }
    }

    public static void CustomOpDomainAdd(nint domain, void* op) =>
        Check(((delegate* unmanaged<nint, void*, nint>)Table[CustomOpDomainAddIndex])(domain, op));

    public static void AddCustomOpDomain(nint sessionOptions, nint domain) =>
        Check(((delegate* unmanaged<nint, nint, nint>)Table[AddCustomOpDomainIndex])(sessionOptions, domain));

    /// <summary>Input <paramref name="index"/> of a kernel context: its data and up to 8 dimensions (rank returned).</summary>
    public static nint Input(nint context, int index, out void* data, Span<long> dims, out int rank)
    {
        nint value;
        data = null;
        rank = 0;
        var status = ((delegate* unmanaged<nint, nuint, nint*, nint>)Table[KernelContextGetInputIndex])(context, (nuint)index, &value);
        if (status != 0) return status;
        if (value == 0) return CreateStatus(ErrorInvalidArgument, $"input {index} is missing");
        status = Shape(value, dims, out rank);
        if (status != 0) return status;
        void* p;
        status = ((delegate* unmanaged<nint, void**, nint>)Table[GetTensorMutableDataIndex])(value, &p);
        data = p;
        return status;
    }

    /// <summary>Creates output <paramref name="index"/> with <paramref name="dims"/> and returns its data.</summary>
    public static nint Output(nint context, int index, ReadOnlySpan<long> dims, out void* data)
    {
        data = null;
        nint value;
        nint status;
        fixed (long* d = dims)
        {
            status = ((delegate* unmanaged<nint, nuint, long*, nuint, nint*, nint>)Table[KernelContextGetOutputIndex])(
                context, (nuint)index, d, (nuint)dims.Length, &value);
        }
        if (status != 0) return status;
        void* p;
        status = ((delegate* unmanaged<nint, void**, nint>)Table[GetTensorMutableDataIndex])(value, &p);
        data = p;
        return status;
    }

    private static nint Shape(nint value, Span<long> dims, out int rank)
    {
        rank = 0;
        nint info;
        var status = ((delegate* unmanaged<nint, nint*, nint>)Table[GetTensorTypeAndShapeIndex])(value, &info);
        if (status != 0) return status;
        try
        {
            nuint count;
            status = ((delegate* unmanaged<nint, nuint*, nint>)Table[GetDimensionsCountIndex])(info, &count);
            if (status != 0) return status;
            if (count > (nuint)dims.Length) return CreateStatus(ErrorInvalidArgument, $"a tensor of rank {count} where at most {dims.Length} is expected");
            fixed (long* d = dims)
            {
                status = ((delegate* unmanaged<nint, long*, nuint, nint>)Table[GetDimensionsIndex])(info, d, count);
            }
            rank = (int)count;
            return status;
        }
        finally
        {
            ((delegate* unmanaged<nint, void>)Table[ReleaseTensorTypeAndShapeInfoIndex])(info);
        }
    }

    /// <summary>
    /// Shape inference: output <paramref name="output"/> gets the type and shape of input <paramref name="input"/>.
    /// The input's info belongs to the context (releasing it here crashed with a double free).
    /// </summary>
    public static nint ShapeLikeInput(nint context, int input, int output)
    {
        nint info;
        var status = ((delegate* unmanaged<nint, nuint, nint*, nint>)Table[ShapeInferGetInputTypeShapeIndex])(context, (nuint)input, &info);
        return status != 0 ? status : ((delegate* unmanaged<nint, nuint, nint, nint>)Table[ShapeInferSetOutputTypeShapeIndex])(context, (nuint)output, info);
    }

    /// <summary>
    /// Runs <paramref name="fn"/>(state, i) for i in [0, total) on the session's intra-op thread pool (the global pool
    /// here), divided into at most <paramref name="batches"/> contiguous batches, and returns when all are done.
    /// </summary>
    public static nint ParallelFor(nint context, delegate* unmanaged<void*, nuint, void> fn, int total, int batches, void* state) =>
        ((delegate* unmanaged<nint, delegate* unmanaged<void*, nuint, void>, nuint, nuint, void*, nint>)Table[KernelContextParallelForIndex])(
            context, fn, (nuint)total, (nuint)batches, state);
}
