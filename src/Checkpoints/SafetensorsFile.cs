using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using System.Text.Json;

namespace Serving.Checkpoints;

/// <summary>
/// A parsed safetensors file: the header is validated against every rule of the format before any tensor is
/// handed out, and tensor data is read in place (memory-mapped file, or a pinned in-memory upload).
/// Spans returned by <see cref="GetBytes"/> are valid until the file is disposed.
/// </summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    /// <summary>The format's cap on the header size.</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private readonly string _source;
    private readonly byte* _buffer;      // start of the data buffer (after the header)
    private readonly long _bufferLength;
    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly GCHandle _pin;
    private bool _disposed;

    private SafetensorsFile(string source, byte* fileStart, long fileLength, MemoryMappedFile? map,
        MemoryMappedViewAccessor? view, GCHandle pin)
    {
        _source = source;
        _map = map;
        _view = view;
        _pin = pin;
        try
        {
            (Tensors, Metadata, var headerLength) = ParseHeader(source, new ReadOnlySpan<byte>(fileStart, (int)Math.Min(fileLength, int.MaxValue)), fileLength);
            _buffer = fileStart + 8 + headerLength;
            _bufferLength = fileLength - 8 - headerLength;
        }
        catch
        {
            Release();
            throw;
        }
    }

    /// <summary>Tensors by name.</summary>
    public IReadOnlyDictionary<string, TensorInfo> Tensors { get; }

    /// <summary>The optional <c>__metadata__</c> string map.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Where the file came from, for messages.</summary>
    public string SourceName => _source;

    /// <summary>
    /// Opens and validates a file, memory-mapping it read-only. A symbolic link (the Hugging Face cache's layout) is
    /// followed: the length is the opened target's, and a dangling link is a <see cref="DanglingLinkException"/>.
    /// </summary>
    public static SafetensorsFile Open(string path)
    {
        LinkedFiles.ThrowIfDangling(path);
        // The handle's length, not FileInfo's: on Linux FileInfo(path).Length describes a link, not its target.
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1);
        MemoryMappedFile? map = null;
        MemoryMappedViewAccessor? view = null;
        try
        {
            var length = stream.Length;
            if (length < 8)
            {
                throw new SafetensorsFormatException(path, null, $"file is {length} bytes; a safetensors file starts with an 8-byte header length");
            }
            map = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
            view = map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
            byte* p = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            p += view.PointerOffset;
            return new SafetensorsFile(path, p, length, map, view, default);
        }
        catch
        {
            view?.Dispose();
            map?.Dispose();
            stream.Dispose();
            throw;
        }
    }

    /// <summary>Validates an in-memory file (an upload). The array is pinned until disposal and must not change.</summary>
    public static SafetensorsFile Parse(byte[] bytes, string sourceName = "safetensors")
    {
        ArgumentNullException.ThrowIfNull(bytes);
        if (bytes.Length < 8)
        {
            throw new SafetensorsFormatException(sourceName, null, $"file is {bytes.Length} bytes; a safetensors file starts with an 8-byte header length");
        }
        var pin = GCHandle.Alloc(bytes, GCHandleType.Pinned);
        return new SafetensorsFile(sourceName, (byte*)pin.AddrOfPinnedObject(), bytes.Length, null, null, pin);
    }

    /// <summary>The tensor's entry, or a <see cref="SafetensorsFormatException"/> naming the missing tensor.</summary>
    public TensorInfo Get(string name) =>
        Tensors.TryGetValue(name, out var info)
            ? info
            : throw new SafetensorsFormatException(_source, name, "missing tensor");

    /// <summary>Raw little-endian bytes of a tensor, in place.</summary>
    public ReadOnlySpan<byte> GetBytes(string name)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var info = Get(name);
        if (info.ByteLength > int.MaxValue)
        {
            throw new SafetensorsFormatException(_source, name, $"tensor of {info.ByteLength} bytes is too large for one span");
        }
        return new ReadOnlySpan<byte>(_buffer + info.Begin, (int)info.ByteLength);
    }

    /// <summary>Reads a float tensor (F32, F16, BF16, F64) converted to fp32, checking the expected shape when given.</summary>
    public float[] ReadFloat32(string name, ReadOnlySpan<long> expectedShape = default)
    {
        var info = Get(name);
        if (!expectedShape.IsEmpty) CheckShape(info, expectedShape);
        var result = new float[checked((int)info.ElementCount)];
        ReadFloat32(name, result);
        return result;
    }

    /// <summary>Reads a float tensor converted to fp32 into <paramref name="destination"/> (its length must equal the element count).</summary>
    public void ReadFloat32(string name, Span<float> destination)
    {
        var info = Get(name);
        if (destination.Length != info.ElementCount)
        {
            throw new SafetensorsFormatException(_source, name, $"has {info.ElementCount} elements {info.ShapeText}, destination holds {destination.Length}");
        }
        var bytes = GetBytes(name);
        switch (info.DType)
        {
            case SafetensorsDType.F32:
                MemoryMarshal.Cast<byte, float>(bytes).CopyTo(destination);
                break;
            case SafetensorsDType.F16:
                var halves = MemoryMarshal.Cast<byte, Half>(bytes);
                for (var i = 0; i < halves.Length; i++) destination[i] = (float)halves[i];
                break;
            case SafetensorsDType.BF16:
                var raw = MemoryMarshal.Cast<byte, ushort>(bytes);
                for (var i = 0; i < raw.Length; i++) destination[i] = BitConverter.Int32BitsToSingle(raw[i] << 16);
                break;
            case SafetensorsDType.F64:
                var doubles = MemoryMarshal.Cast<byte, double>(bytes);
                for (var i = 0; i < doubles.Length; i++) destination[i] = (float)doubles[i];
                break;
            default:
                throw new SafetensorsFormatException(_source, name, $"dtype {info.DType} is not a float type (expected F32, F16, BF16 or F64)");
        }
    }

    /// <summary>Reads an integer tensor (I64, I32, I16, I8, U8, U16, U32) as int64.</summary>
    public long[] ReadInt64(string name)
    {
        var info = Get(name);
        var bytes = GetBytes(name);
        var result = new long[checked((int)info.ElementCount)];
        for (var i = 0; i < result.Length; i++)
        {
            result[i] = info.DType switch
            {
                SafetensorsDType.I64 => BinaryPrimitives.ReadInt64LittleEndian(bytes[(i * 8)..]),
                SafetensorsDType.I32 => BinaryPrimitives.ReadInt32LittleEndian(bytes[(i * 4)..]),
                SafetensorsDType.U32 => BinaryPrimitives.ReadUInt32LittleEndian(bytes[(i * 4)..]),
                SafetensorsDType.I16 => BinaryPrimitives.ReadInt16LittleEndian(bytes[(i * 2)..]),
                SafetensorsDType.U16 => BinaryPrimitives.ReadUInt16LittleEndian(bytes[(i * 2)..]),
                SafetensorsDType.I8 => (sbyte)bytes[i],
                SafetensorsDType.U8 or SafetensorsDType.BOOL => bytes[i],
                _ => throw new SafetensorsFormatException(_source, name, $"dtype {info.DType} is not an integer type"),
            };
        }
        return result;
    }

    /// <summary>Throws unless the tensor has exactly <paramref name="expected"/> as its shape.</summary>
    public void CheckShape(TensorInfo info, ReadOnlySpan<long> expected)
    {
        if (!info.Shape.AsSpan().SequenceEqual(expected))
        {
            throw new SafetensorsFormatException(_source, info.Name, $"shape {info.ShapeText} does not match the expected [{string.Join(", ", expected.ToArray())}]");
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Release();
    }

    private void Release()
    {
        if (_view is not null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
        }
        _map?.Dispose();
        if (_pin.IsAllocated) _pin.Free();
    }

    private static (Dictionary<string, TensorInfo>, Dictionary<string, string>, long) ParseHeader(
        string source, ReadOnlySpan<byte> file, long fileLength)
    {
        var n = BinaryPrimitives.ReadUInt64LittleEndian(file);
        if (n > MaxHeaderBytes)
        {
            throw new SafetensorsFormatException(source, null, $"header length {n} exceeds the format's limit of {MaxHeaderBytes} bytes");
        }
        if ((long)n > fileLength - 8)
        {
            throw new SafetensorsFormatException(source, null, $"header length {n} runs beyond the end of the file ({fileLength} bytes)");
        }
        var header = file.Slice(8, (int)n);
        if (header.Length == 0 || header[0] != (byte)'{')
        {
            throw new SafetensorsFormatException(source, null, "header does not start with '{' (not a JSON object)");
        }
        var bufferLength = fileLength - 8 - (long)n;

        if (!System.Text.Unicode.Utf8.IsValid(header))
        {
            throw new SafetensorsFormatException(source, null, "header is not valid UTF-8");
        }
        JsonDocument doc;
        try
        {
            // Validates UTF-8 as well as JSON; trailing spaces (the format's padding) are whitespace to the parser.
            doc = JsonDocument.Parse(header.ToArray(), new JsonDocumentOptions { MaxDepth = 8 });
        }
        catch (JsonException ex)
        {
            throw new SafetensorsFormatException(source, null, $"header is not valid JSON: {ex.Message}");
        }

        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new SafetensorsFormatException(source, null, "header is not a JSON object");
            }
            var tensors = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var seenMetadata = false;
            foreach (var property in doc.RootElement.EnumerateObject())
            {
                var name = property.Name;
                if (name == "__metadata__")
                {
                    if (seenMetadata) throw new SafetensorsFormatException(source, null, "duplicate key '__metadata__'");
                    seenMetadata = true;
                    ReadMetadata(source, property.Value, metadata);
                    continue;
                }
                if (tensors.ContainsKey(name))
                {
                    throw new SafetensorsFormatException(source, name, "duplicate tensor name in header");
                }
                tensors.Add(name, ReadEntry(source, name, property.Value, bufferLength));
            }
            CheckCoverage(source, tensors.Values, bufferLength);
            return (tensors, metadata, (long)n);
        }
    }

    private static void ReadMetadata(string source, JsonElement element, Dictionary<string, string> metadata)
    {
        if (element.ValueKind != JsonValueKind.Object)
        {
            throw new SafetensorsFormatException(source, null, "'__metadata__' must be an object of strings");
        }
        foreach (var item in element.EnumerateObject())
        {
            if (item.Value.ValueKind != JsonValueKind.String)
            {
                throw new SafetensorsFormatException(source, null, $"'__metadata__' value for '{item.Name}' is not a string");
            }
            metadata[item.Name] = item.Value.GetString()!;
        }
    }

    private static TensorInfo ReadEntry(string source, string name, JsonElement entry, long bufferLength)
    {
        if (entry.ValueKind != JsonValueKind.Object)
        {
            throw new SafetensorsFormatException(source, name, "header entry is not an object with dtype, shape and data_offsets");
        }
        if (!entry.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
        {
            throw new SafetensorsFormatException(source, name, "missing or non-string 'dtype'");
        }
        var dtypeText = dtypeElement.GetString()!;
        if (!SafetensorsDTypes.TryParse(dtypeText, out var dtype))
        {
            throw new SafetensorsFormatException(source, name, $"unknown dtype '{dtypeText}'");
        }
        if (!entry.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
        {
            throw new SafetensorsFormatException(source, name, "missing or non-array 'shape'");
        }
        var shape = new long[shapeElement.GetArrayLength()];
        var i = 0;
        long elements = 1;
        foreach (var dim in shapeElement.EnumerateArray())
        {
            if (dim.ValueKind != JsonValueKind.Number || !dim.TryGetInt64(out var d) || d < 0)
            {
                throw new SafetensorsFormatException(source, name, $"shape entry {i} is not a non-negative integer");
            }
            shape[i++] = d;
            try { elements = checked(elements * d); }
            catch (OverflowException) { throw new SafetensorsFormatException(source, name, "shape overflows the element count"); }
        }
        if (!entry.TryGetProperty("data_offsets", out var offsets) || offsets.ValueKind != JsonValueKind.Array || offsets.GetArrayLength() != 2)
        {
            throw new SafetensorsFormatException(source, name, "missing 'data_offsets' [begin, end]");
        }
        var begin = ReadOffset(source, name, offsets[0], "begin");
        var end = ReadOffset(source, name, offsets[1], "end");
        if (end < begin)
        {
            throw new SafetensorsFormatException(source, name, $"data_offsets end {end} is before begin {begin}");
        }
        if (end > bufferLength)
        {
            throw new SafetensorsFormatException(source, name, $"data_offsets [{begin}, {end}) run beyond the data buffer ({bufferLength} bytes)");
        }
        long expectedBytes;
        try { expectedBytes = checked(elements * SafetensorsDTypes.SizeOf(dtype)); }
        catch (OverflowException) { throw new SafetensorsFormatException(source, name, "shape overflows the byte count"); }
        if (expectedBytes != end - begin)
        {
            throw new SafetensorsFormatException(source, name,
                $"shape [{string.Join(", ", shape)}] of {dtype} needs {expectedBytes} bytes but data_offsets span {end - begin}");
        }
        return new TensorInfo(name, dtype, shape, begin, end);
    }

    private static long ReadOffset(string source, string name, JsonElement element, string which)
    {
        if (element.ValueKind != JsonValueKind.Number || !element.TryGetInt64(out var value) || value < 0)
        {
            throw new SafetensorsFormatException(source, name, $"data_offsets {which} is not a non-negative integer");
        }
        return value;
    }

    private static void CheckCoverage(string source, IEnumerable<TensorInfo> tensors, long bufferLength)
    {
        var ordered = tensors.OrderBy(t => t.Begin).ThenBy(t => t.End).ToArray();
        long expected = 0;
        TensorInfo? previous = null;
        foreach (var t in ordered)
        {
            if (t.Begin < expected)
            {
                throw new SafetensorsFormatException(source, t.Name, $"data_offsets [{t.Begin}, {t.End}) overlap tensor '{previous!.Name}' [{previous.Begin}, {previous.End})");
            }
            if (t.Begin > expected)
            {
                throw new SafetensorsFormatException(source, t.Name, $"hole in the data buffer: bytes [{expected}, {t.Begin}) belong to no tensor");
            }
            expected = t.End;
            previous = t;
        }
        if (expected != bufferLength)
        {
            throw new SafetensorsFormatException(source, null, $"data buffer is {bufferLength} bytes but the tensors cover {expected} (trailing bytes or truncated file)");
        }
    }
}
