using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Serving.Inference.Runtime;

/// <summary>
/// A pinned (pinned-object-heap) array that ONNX Runtime reads and writes in place. Tensor views over any part of it
/// are created without copies; the array never moves, so views stay valid for the buffer's lifetime.
/// </summary>
internal sealed unsafe class NativeBuffer<T> where T : unmanaged
{
    public NativeBuffer(long length)
    {
        Array = GC.AllocateArray<T>(checked((int)length), pinned: true);
        Pointer = (T*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(Array));
    }

    public T[] Array { get; }
    public T* Pointer { get; }
    public int Length => Array.Length;
    public Span<T> Span => Array;

    /// <summary>A tensor view of <c>[offset, offset + Π shape)</c>. The caller owns (disposes) the view.</summary>
    public OrtValue View(long offset, params long[] shape)
    {
        long n = 1;
        foreach (var d in shape) n *= d;
        if (offset < 0 || offset + n > Array.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(shape), $"view [{offset}, {offset + n}) outside buffer of {Array.Length}");
        }
        return OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, ElementType, shape,
            (IntPtr)(Pointer + offset), n * sizeof(T));
    }

    /// <summary>A byte view of elements <c>[offset, offset + count)</c> (a <see cref="DeviceMemory"/> copy's host side). The caller owns it.</summary>
    public OrtValue Bytes(long offset, long count)
    {
        if (offset < 0 || count < 0 || offset + count > Array.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(count), $"view [{offset}, {offset + count}) outside buffer of {Array.Length}");
        }
        return OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, TensorElementType.UInt8, [count * sizeof(T)],
            (IntPtr)(Pointer + offset), count * sizeof(T));
    }

    internal static TensorElementType ElementType =>
        typeof(T) == typeof(float) ? TensorElementType.Float
        : typeof(T) == typeof(byte) ? TensorElementType.UInt8
        : typeof(T) == typeof(Float16) ? TensorElementType.Float16
        : typeof(T) == typeof(int) ? TensorElementType.Int32
        : typeof(T) == typeof(long) ? TensorElementType.Int64
        : throw new NotSupportedException(typeof(T).Name);
}
