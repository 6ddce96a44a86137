using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace Serving.Checkpoints;

/// <summary>Writes safetensors files (tensors laid out in the given order, header padded to 8 bytes).</summary>
public static class SafetensorsWriter
{
    /// <summary>One tensor to write; <see cref="Data"/> is its raw little-endian bytes.</summary>
    public sealed record Entry(string Name, SafetensorsDType DType, long[] Shape, ReadOnlyMemory<byte> Data)
    {
        /// <summary>An fp32 tensor.</summary>
        public static Entry F32(string name, long[] shape, float[] values) =>
            new(name, SafetensorsDType.F32, shape, MemoryMarshal.AsBytes(values.AsSpan()).ToArray());

        /// <summary>An fp16 tensor (values rounded to nearest).</summary>
        public static Entry F16(string name, long[] shape, float[] values)
        {
            var halves = new Half[values.Length];
            for (var i = 0; i < values.Length; i++) halves[i] = (Half)values[i];
            return new(name, SafetensorsDType.F16, shape, MemoryMarshal.AsBytes(halves.AsSpan()).ToArray());
        }

        /// <summary>An int64 tensor.</summary>
        public static Entry I64(string name, long[] shape, long[] values) =>
            new(name, SafetensorsDType.I64, shape, MemoryMarshal.AsBytes(values.AsSpan()).ToArray());
    }

    /// <summary>Writes the entries and optional metadata to <paramref name="stream"/>.</summary>
    public static void Write(Stream stream, IEnumerable<Entry> entries, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = entries.ToList();
        var header = BuildHeader(list, metadata);
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
        stream.Write(length);
        stream.Write(header);
        foreach (var e in list) stream.Write(e.Data.Span);
    }

    /// <summary>Writes to a file.</summary>
    public static void Write(string path, IEnumerable<Entry> entries, IReadOnlyDictionary<string, string>? metadata = null)
    {
        using var file = File.Create(path);
        Write(file, entries, metadata);
    }

    /// <summary>Returns the file as bytes.</summary>
    public static byte[] ToBytes(IEnumerable<Entry> entries, IReadOnlyDictionary<string, string>? metadata = null)
    {
        using var ms = new MemoryStream();
        Write(ms, entries, metadata);
        return ms.ToArray();
    }

    private static byte[] BuildHeader(List<Entry> entries, IReadOnlyDictionary<string, string>? metadata)
    {
        using var ms = new MemoryStream();
        using (var json = new Utf8JsonWriter(ms))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject("__metadata__");
                foreach (var (k, v) in metadata) json.WriteString(k, v);
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var e in entries)
            {
                long elements = 1;
                foreach (var d in e.Shape) elements *= d;
                if (elements * SafetensorsDTypes.SizeOf(e.DType) != e.Data.Length)
                {
                    throw new ArgumentException($"tensor '{e.Name}': shape [{string.Join(", ", e.Shape)}] of {e.DType} needs {elements * SafetensorsDTypes.SizeOf(e.DType)} bytes, data has {e.Data.Length}");
                }
                json.WriteStartObject(e.Name);
                json.WriteString("dtype", e.DType.ToString());
                json.WriteStartArray("shape");
                foreach (var d in e.Shape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + e.Data.Length);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += e.Data.Length;
            }
            json.WriteEndObject();
        }
        var bytes = ms.ToArray();
        var padded = (bytes.Length + 7) / 8 * 8;
        if (padded == bytes.Length) return bytes;
        var result = new byte[padded];
        bytes.CopyTo(result, 0);
        result.AsSpan(bytes.Length).Fill((byte)' ');
        return result;
    }
}
