using System.Runtime.InteropServices;

namespace Serving.Inference.Runtime;

/// <summary>The C structure a custom operator is described by, shared by the project's C# operators.</summary>
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
}
