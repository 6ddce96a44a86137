using System.Runtime.InteropServices;

namespace Serving.Inference.Runtime;

/// <summary>
/// The C structure a custom operator is described by, and what the project's C# CPU operators share of it: the
/// descriptor with every callback that only returns a constant or the operator's own name, types and counts
/// (<see cref="NewCpuOp"/>). An operator adds its compute entries and any optional ones (shape inference, in-place).
/// </summary>
internal static unsafe class CustomOpAbi
{
    /// <summary><c>struct OrtCustomOp</c> of onnxruntime_c_api.h, fields up to version 18 (ORT checks the version and nulls).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct OrtCustomOp
    {
        public uint Version;
        public delegate* unmanaged<OrtCustomOp*, nint, nint, nint> CreateKernel;
        public delegate* unmanaged<OrtCustomOp*, nint> GetName;
        public delegate* unmanaged<OrtCustomOp*, nint> GetExecutionProviderType;
        public delegate* unmanaged<OrtCustomOp*, nuint, int> GetInputType;
        public delegate* unmanaged<OrtCustomOp*, nuint> GetInputTypeCount;
        public delegate* unmanaged<OrtCustomOp*, nuint, int> GetOutputType;
        public delegate* unmanaged<OrtCustomOp*, nuint> GetOutputTypeCount;
        public delegate* unmanaged<nint, nint, void> KernelCompute;
        public delegate* unmanaged<nint, void> KernelDestroy;
        public delegate* unmanaged<OrtCustomOp*, nuint, int> GetInputCharacteristic;
        public delegate* unmanaged<OrtCustomOp*, nuint, int> GetOutputCharacteristic;
        public delegate* unmanaged<OrtCustomOp*, nuint, int> GetInputMemoryType;
        public delegate* unmanaged<OrtCustomOp*, int> GetVariadicInputMinArity;
        public delegate* unmanaged<OrtCustomOp*, int> GetVariadicInputHomogeneity;
        public delegate* unmanaged<OrtCustomOp*, int> GetVariadicOutputMinArity;
        public delegate* unmanaged<OrtCustomOp*, int> GetVariadicOutputHomogeneity;
        public delegate* unmanaged<OrtCustomOp*, nint, nint, nint*, nint> CreateKernelV2;
        public delegate* unmanaged<nint, nint, nint> KernelComputeV2;
        public delegate* unmanaged<OrtCustomOp*, nint, nint> InferOutputShapeFn; // v17
        public nint GetStartVersion;     // v17, null: since version 1
        public nint GetEndVersion;
        public delegate* unmanaged<int**, int**, nuint> GetMayInplace;
        public delegate* unmanaged<int*, int*, void> ReleaseMayInplace;
        public delegate* unmanaged<int**, int**, nuint> GetAliasMap;
        public delegate* unmanaged<int*, int*, void> ReleaseAliasMap;
    }

    public const int TensorFloat = 1;  // ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT
    public const int TensorInt64 = 7;  // ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64

    /// <summary>An <see cref="OrtCustomOp"/> followed by what the shared callbacks read (ONNX Runtime hands them the descriptor's address).</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct CpuOp
    {
        public OrtCustomOp Op;
        public nint Name;       // UTF-8, process lifetime
        public nint Provider;   // UTF-8 "CPUExecutionProvider"
        public int InputCount;
        public ulong Int64Inputs; // bit i: input i is int64, else float
        public int OutputCount;
    }

    /// <summary>
    /// A stateless CPU operator's descriptor (process lifetime): <paramref name="inputCount"/> inputs (those in
    /// <paramref name="int64Inputs"/>, as a bit mask, int64; the others float), <paramref name="outputCount"/> float
    /// outputs, every input and output required, errors as statuses through <paramref name="computeV2"/>
    /// (<paramref name="compute"/> for runtimes older than 1.16). <paramref name="version"/>: the struct version the
    /// operator fills fields up to.
    /// </summary>
    public static OrtCustomOp* NewCpuOp(string name, uint version, int inputCount, ulong int64Inputs,
        delegate* unmanaged<nint, nint, void> compute, delegate* unmanaged<nint, nint, nint> computeV2, int outputCount = 1)
    {
        var cpu = (CpuOp*)NativeMemory.AllocZeroed((nuint)sizeof(CpuOp));
        cpu->Name = Marshal.StringToCoTaskMemUTF8(name);
        cpu->Provider = Marshal.StringToCoTaskMemUTF8("CPUExecutionProvider");
        cpu->InputCount = inputCount;
        cpu->Int64Inputs = int64Inputs;
        cpu->OutputCount = outputCount;
        var op = &cpu->Op;
        op->Version = version;
        op->CreateKernel = &CreateKernel;
        op->GetName = &GetName;
        op->GetExecutionProviderType = &GetProvider;
        op->GetInputType = &GetInputType;
        op->GetInputTypeCount = &GetInputTypeCount;
        op->GetOutputType = &GetOutputType;
        op->GetOutputTypeCount = &GetOutputTypeCount;
        op->KernelCompute = compute;
        op->KernelDestroy = &KernelDestroy;
        op->GetInputCharacteristic = &Required;
        op->GetOutputCharacteristic = &Required;
        op->GetInputMemoryType = &DefaultMemory;
        op->GetVariadicInputMinArity = &One;
        op->GetVariadicInputHomogeneity = &One;
        op->GetVariadicOutputMinArity = &One;
        op->GetVariadicOutputHomogeneity = &One;
        op->CreateKernelV2 = &CreateKernelV2;
        op->KernelComputeV2 = computeV2;
        return op;
    }

    /// <summary>
    /// The body of an operator's <c>KernelComputeV2</c>: <paramref name="compute"/>'s status, or an exception turned into
    /// <c>ORT_FAIL</c> naming the operator (an exception must not cross into native code).
    /// </summary>
    public static nint ComputeV2(string name, delegate*<nint, nint> compute, nint context)
    {
        try
        {
            return compute(context);
        }
        catch (Exception e)
        {
            return OrtNativeApi.CreateStatus(OrtNativeApi.ErrorFail, $"{name}: {e.Message}");
        }
    }

    /// <summary>The body of an operator's <c>KernelCompute</c>, only called by runtimes older than 1.16 (which this build never loads): they take no status.</summary>
    public static void ComputeV1(string name, delegate*<nint, nint> compute, nint context)
    {
        if (compute(context) != 0) Environment.FailFast($"{name} failed on a runtime without KernelComputeV2");
    }

    /// <summary>An <c>INVALID_ARGUMENT</c> status naming the operator.</summary>
    public static nint InvalidArgument(string name, string message) =>
        OrtNativeApi.CreateStatus(OrtNativeApi.ErrorInvalidArgument, $"{name}: {message}");

    [UnmanagedCallersOnly] private static nint CreateKernel(OrtCustomOp* op, nint api, nint info) => 1; // stateless
    [UnmanagedCallersOnly] private static nint CreateKernelV2(OrtCustomOp* op, nint api, nint info, nint* kernel) { *kernel = 1; return 0; }
    [UnmanagedCallersOnly] private static void KernelDestroy(nint kernel) { }
    [UnmanagedCallersOnly] private static nint GetName(OrtCustomOp* op) => ((CpuOp*)op)->Name;
    [UnmanagedCallersOnly] private static nint GetProvider(OrtCustomOp* op) => ((CpuOp*)op)->Provider;
    [UnmanagedCallersOnly] private static int GetInputType(OrtCustomOp* op, nuint index) => ((((CpuOp*)op)->Int64Inputs >> (int)index) & 1) != 0 ? TensorInt64 : TensorFloat;
    [UnmanagedCallersOnly] private static nuint GetInputTypeCount(OrtCustomOp* op) => (nuint)((CpuOp*)op)->InputCount;
    [UnmanagedCallersOnly] private static int GetOutputType(OrtCustomOp* op, nuint index) => TensorFloat;
    [UnmanagedCallersOnly] private static nuint GetOutputTypeCount(OrtCustomOp* op) => (nuint)((CpuOp*)op)->OutputCount;
    [UnmanagedCallersOnly] private static int Required(OrtCustomOp* op, nuint index) => 1; // INPUT_OUTPUT_REQUIRED
    [UnmanagedCallersOnly] private static int DefaultMemory(OrtCustomOp* op, nuint index) => 0; // OrtMemTypeDefault
    [UnmanagedCallersOnly] private static int One(OrtCustomOp* op) => 1;
}

/// <summary>
/// One custom-operator domain with one operator, created on first use and kept for the process (sessions keep referring
/// to it), added to each session's options by <see cref="Register"/>.
/// </summary>
internal sealed unsafe class CustomOpDomain(string domain, Func<nint> createOp)
{
    private readonly Lock _gate = new();
    private nint _handle; // OrtCustomOpDomain*

    /// <summary>Adds the domain to <paramref name="options"/> (CPU provider).</summary>
    public void Register(Microsoft.ML.OnnxRuntime.SessionOptions options) =>
        OrtNativeApi.AddCustomOpDomain(options.DangerousGetHandle(), Ensure());

    private nint Ensure()
    {
        lock (_gate)
        {
            if (_handle != 0) return _handle;
            var handle = OrtNativeApi.CreateCustomOpDomain(domain);
            OrtNativeApi.CustomOpDomainAdd(handle, (void*)createOp());
            return _handle = handle;
        }
    }
}
