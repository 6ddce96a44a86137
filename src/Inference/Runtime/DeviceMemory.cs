using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Serving.Inference.Graphs;
using DT = Onnx.TensorProto.Types.DataType;

namespace Serving.Inference.Runtime;

/// <summary>
/// Memory on the execution provider's device that a decoder binds its state to (the K/V cache, the hidden-state
/// buffers, positions and sequence lengths), so that a step reads and writes it where the kernels run instead of
/// ONNX Runtime copying every bound host buffer in and out of each <c>Run</c>. On CUDA that is device memory from the
/// provider's allocator; the CPU provider needs none (its buffers are the pinned host buffers,
/// <see cref="NativeBuffer{T}"/>), except in tests, which emulate a device with separate host allocations so that the
/// whole device path — uploads, downloads, device-to-device copies — runs and is checked without a GPU
/// (<see cref="RuntimeOptions.EmulateDeviceMemory"/>).
/// <para>Every copy goes through a small ONNX graph of <c>Identity</c> nodes over byte tensors run with bound inputs
/// and outputs (<see cref="Copier"/>): ONNX Runtime moves the bytes between host and device as it does for any bound
/// tensor, with any provider, and no provider-specific memcpy is needed from C#.</para>
/// </summary>
internal sealed class DeviceMemory : IDisposable
{
    private readonly OrtAllocator? _allocator;
    private readonly SessionOptions _copierOptions;
    private readonly Dictionary<int, InferenceSession> _copiers = [];
    private readonly RunOptions _run = new();
    private readonly bool _emulated;
    private NativeBuffer<byte>? _zeros;

    private DeviceMemory(RuntimeOptions options)
    {
        _emulated = options.ExecutionProvider == ExecutionProviderKind.Cpu;
        _copierOptions = OrtRuntime.CreateSessionOptions(options);
        _copierOptions.GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL; // keep every Identity
        if (_emulated)
        {
            Info = OrtMemoryInfo.DefaultInstance;
            return;
        }
        Info = new OrtMemoryInfo(OrtMemoryInfo.allocatorCUDA, OrtAllocatorType.DeviceAllocator, options.DeviceId, OrtMemType.Default);
        _allocator = new OrtAllocator(Copier(1), Info); // the provider's device allocator, registered by the copier's session
    }

    /// <summary>Device memory for <paramref name="options"/>' provider; null where the host buffers are what the kernels read (the CPU provider).</summary>
    public static DeviceMemory? For(RuntimeOptions options) =>
        options.ExecutionProvider != ExecutionProviderKind.Cpu || options.EmulateDeviceMemory ? new DeviceMemory(options) : null;

    /// <summary>How ONNX Runtime sees this memory (the tensor views' location).</summary>
    public OrtMemoryInfo Info { get; }

    /// <summary>Whether this is host memory standing in for a device (tests).</summary>
    public bool Emulated => _emulated;

    /// <summary>Bytes allocated and not yet freed.</summary>
    public long AllocatedBytes { get; private set; }

    /// <summary>Allocates <paramref name="length"/> elements of <typeparamref name="T"/>, zeroed (stale memory may hold NaN, which masked attention would still multiply by zero).</summary>
    public DeviceBuffer<T> Allocate<T>(long length) where T : unmanaged
    {
        var bytes = checked(length * Marshal.SizeOf<T>());
        if (bytes <= 0) throw new ArgumentOutOfRangeException(nameof(length), length, "must be positive");
        IntPtr pointer;
        IDisposable? owner = null;
        if (_emulated)
        {
            unsafe { pointer = (IntPtr)NativeMemory.AlignedAlloc((nuint)bytes, 64); }
        }
        else
        {
            if (bytes > int.MaxValue) throw new NotSupportedException($"one device allocation of {bytes} bytes is above 2 GiB; lower MaxBatch or MaxContext");
            // An allocated byte tensor owns the memory; its data pointer is read without touching the (device) memory.
            var tensor = OrtValue.CreateAllocatedTensorValue(_allocator!, TensorElementType.UInt8, [bytes]);
            unsafe { pointer = (IntPtr)System.Runtime.CompilerServices.Unsafe.AsPointer(ref MemoryMarshal.GetReference(tensor.GetTensorMutableRawData())); }
            owner = tensor;
        }
        var buffer = new DeviceBuffer<T>(this, pointer, length, owner);
        AllocatedBytes += bytes;
        Zero(buffer.Pointer, bytes);
        return buffer;
    }

    internal void Free(IntPtr pointer, long bytes, IDisposable? owner)
    {
        AllocatedBytes -= bytes;
        if (owner is not null) owner.Dispose();
        else unsafe { NativeMemory.AlignedFree((void*)pointer); }
    }

    private void Zero(IntPtr pointer, long bytes)
    {
        if (_emulated)
        {
            unsafe { NativeMemory.Clear((void*)pointer, (nuint)bytes); }
            return;
        }
        const int Chunk = 1 << 22;
        _zeros ??= new NativeBuffer<byte>(Chunk);
        for (long at = 0; at < bytes; at += Chunk)
        {
            var n = Math.Min(Chunk, bytes - at);
            using var from = _zeros.View(0, n);
            using var to = ByteView(pointer + (nint)at, n);
            CopyOnce([from], [to]);
        }
    }

    /// <summary>A byte view of <paramref name="bytes"/> bytes of this memory at <paramref name="pointer"/> (for <see cref="Copier"/> bindings).</summary>
    public OrtValue ByteView(IntPtr pointer, long bytes) =>
        OrtValue.CreateTensorValueWithData(Info, TensorElementType.UInt8, [bytes], pointer, bytes);

    /// <summary>
    /// The session that copies <paramref name="count"/> byte tensors at once (inputs <c>x{i}</c> → outputs <c>y{i}</c>,
    /// any lengths, each pair the same), built on first use. Bind host or device views on either side; source and
    /// destination of a pair must not overlap.
    /// </summary>
    public InferenceSession Copier(int count)
    {
        if (_copiers.TryGetValue(count, out var session)) return session;
        var g = new GraphBuilder($"copy_{count}");
        for (var i = 0; i < count; i++)
        {
            g.Input(CopyInput(i), DT.Uint8, $"n{i}");
            g.Node("Identity", [CopyInput(i)], CopyOutput(i));
            g.Output(CopyOutput(i), DT.Uint8, $"n{i}");
        }
        session = new InferenceSession(g.ToBytes(), _copierOptions);
        _copiers[count] = session;
        return session;
    }

    /// <summary>The name of the copier's input <paramref name="i"/>.</summary>
    public static string CopyInput(int i) => i < Names.Length ? Names[i].In : $"x{i}";

    /// <summary>The name of the copier's output <paramref name="i"/>.</summary>
    public static string CopyOutput(int i) => i < Names.Length ? Names[i].Out : $"y{i}";

    private static readonly (string In, string Out)[] Names = Enumerable.Range(0, 64).Select(i => ($"x{i}", $"y{i}")).ToArray();

    /// <summary>Copies each <paramref name="from"/>[i] into <paramref name="to"/>[i] (byte views of equal length) in one run; for one-off copies (allocates a binding).</summary>
    public void CopyOnce(IReadOnlyList<OrtValue> from, IReadOnlyList<OrtValue> to)
    {
        if (from.Count != to.Count || from.Count == 0) throw new ArgumentException("one destination per source");
        var session = Copier(from.Count);
        using var io = session.CreateIoBinding();
        for (var i = 0; i < from.Count; i++)
        {
            io.BindInput(CopyInput(i), from[i]);
            io.BindOutput(CopyOutput(i), to[i]);
        }
        session.RunWithBinding(_run, io);
    }

    /// <summary>Runs a prepared copy (<see cref="CopyPlan"/>): no allocation.</summary>
    public void Run(CopyPlan plan) => plan.Session.RunWithBinding(_run, plan.Binding);

    public void Dispose()
    {
        foreach (var s in _copiers.Values) s.Dispose();
        _copiers.Clear();
        _allocator?.Dispose();
        _copierOptions.Dispose();
        _run.Dispose();
        if (!_emulated) Info.Dispose();
    }
}

/// <summary>A copy bound once and run many times (a step's uploads): the copier session, its binding and the views it owns.</summary>
internal sealed class CopyPlan : IDisposable
{
    private readonly List<OrtValue> _views = [];

    public CopyPlan(DeviceMemory device, IReadOnlyList<(OrtValue From, OrtValue To)> pairs)
    {
        Session = device.Copier(pairs.Count);
        Binding = Session.CreateIoBinding();
        for (var i = 0; i < pairs.Count; i++)
        {
            Binding.BindInput(DeviceMemory.CopyInput(i), pairs[i].From);
            Binding.BindOutput(DeviceMemory.CopyOutput(i), pairs[i].To);
            _views.Add(pairs[i].From);
            _views.Add(pairs[i].To);
        }
    }

    public InferenceSession Session { get; }
    public OrtIoBinding Binding { get; }

    public void Dispose()
    {
        Binding.Dispose();
        foreach (var v in _views) v.Dispose();
    }
}

/// <summary>
/// <see cref="Length"/> elements of <typeparamref name="T"/> in <see cref="DeviceMemory"/>: never read or written from
/// C# directly (on CUDA the pointer is a device address); bound to sessions through <see cref="View"/> and moved with the
/// memory's copier.
/// </summary>
internal sealed class DeviceBuffer<T> : IDisposable where T : unmanaged
{
    private readonly DeviceMemory _memory;
    private readonly IDisposable? _owner;
    private bool _disposed;

    internal DeviceBuffer(DeviceMemory memory, IntPtr pointer, long length, IDisposable? owner)
    {
        _memory = memory;
        Pointer = pointer;
        Length = length;
        _owner = owner;
    }

    public IntPtr Pointer { get; }
    public long Length { get; }
    public static int ElementSize => Marshal.SizeOf<T>();

    /// <summary>A tensor view of <c>[offset, offset + Π shape)</c> in the buffer's element type. The caller owns it.</summary>
    public OrtValue View(long offset, params long[] shape)
    {
        long n = 1;
        foreach (var d in shape) n *= d;
        Check(offset, n);
        return OrtValue.CreateTensorValueWithData(_memory.Info, NativeBuffer<T>.ElementType, shape, Pointer + (nint)(offset * ElementSize), n * ElementSize);
    }

    /// <summary>A byte view of elements <c>[offset, offset + count)</c> (a copier binding). The caller owns it.</summary>
    public OrtValue Bytes(long offset, long count)
    {
        Check(offset, count);
        return _memory.ByteView(Pointer + (nint)(offset * ElementSize), count * ElementSize);
    }

    private void Check(long offset, long n)
    {
        if (offset < 0 || n < 0 || offset + n > Length)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"view [{offset}, {offset + n}) outside device buffer of {Length}");
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _memory.Free(Pointer, Length * ElementSize, _owner);
    }
}
