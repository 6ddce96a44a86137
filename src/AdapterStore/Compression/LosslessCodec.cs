using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Serving.AdapterStore.Compression;

/// <summary><see cref="AdapterCodec.Lossless"/>: every tensor in its uploaded dtype, byte-plane shuffled, one zstd stream.</summary>
internal static class LosslessCodec
{
    public static ContainerHeader Encode(AdapterPayload payload, int level, MemoryStream body)
    {
        var raw = new MemoryStream();
        var entries = new List<TensorEntry>();
        foreach (var t in payload.Tensors)
        {
            int width = WidthOf(t.SourceType);
            var bytes = new byte[t.Data.Length * width];
            ToBytes(t.Data, t.SourceType, bytes);
            var shuffled = new byte[bytes.Length];
            Shuffle(bytes, shuffled, width);
            entries.Add(new TensorEntry(t.Name, t.Shape, t.SourceType, "raw", raw.Position, t.Data.Length));
            raw.Write(shuffled);
        }
        using var compressor = new ZstdSharp.Compressor(level);
        var compressed = compressor.Wrap(raw.GetBuffer().AsSpan(0, (int)raw.Length));
        long offset = body.Position;
        body.Write(compressed);
        return new ContainerHeader(AdapterCodec.Lossless, payload.Manifest, entries, null,
            new LosslessEntry(level, offset, compressed.Length, raw.Length));
    }

    public static List<AdapterTensor> Decode(ContainerHeader header, ReadOnlySpan<byte> body)
    {
        var l = header.Lossless ?? throw new ContainerFormatException("Lossless container without its section entry.");
        var raw = AdapterContainer.Unzstd(AdapterContainer.Section(body, l.Offset, l.Length, "zstd section"), l.RawLength);
        var result = new List<AdapterTensor>(header.Tensors.Count);
        foreach (var t in header.Tensors)
        {
            long elements = AdapterContainer.CheckShape(t);
            int width = WidthOf(t.SourceType);
            var span = AdapterContainer.Section(raw, t.Offset, elements * width, $"tensor '{t.Name}'");
            var unshuffled = new byte[span.Length];
            Unshuffle(span, unshuffled, width);
            var data = new float[elements];
            FromBytes(unshuffled, t.SourceType, data);
            result.Add(new AdapterTensor(t.Name, t.Shape, data, t.SourceType));
        }
        return result;
    }

    internal static int WidthOf(TensorElementType type) => type switch
    {
        TensorElementType.U8 => 1,
        TensorElementType.F16 or TensorElementType.BF16 or TensorElementType.I16 => 2,
        TensorElementType.F32 or TensorElementType.I32 => 4,
        TensorElementType.I64 => 8,
        _ => throw new ContainerFormatException($"Unknown element type {type}."),
    };

    internal static void ToBytes(ReadOnlySpan<float> values, TensorElementType type, Span<byte> dest)
    {
        switch (type)
        {
            case TensorElementType.F32:
                MemoryMarshal.AsBytes(values).CopyTo(dest);
                break;
            case TensorElementType.F16:
                for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteHalfLittleEndian(dest[(2 * i)..], (Half)values[i]);
                break;
            case TensorElementType.BF16:
                for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(dest[(2 * i)..], (ushort)(BitConverter.SingleToUInt32Bits(values[i]) >> 16));
                break;
            case TensorElementType.U8:
                for (int i = 0; i < values.Length; i++) dest[i] = (byte)values[i];
                break;
            case TensorElementType.I16:
                for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteInt16LittleEndian(dest[(2 * i)..], (short)values[i]);
                break;
            case TensorElementType.I32:
                for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteInt32LittleEndian(dest[(4 * i)..], (int)values[i]);
                break;
            case TensorElementType.I64:
                for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteInt64LittleEndian(dest[(8 * i)..], (long)values[i]);
                break;
        }
    }

    internal static void FromBytes(ReadOnlySpan<byte> src, TensorElementType type, Span<float> values)
    {
        switch (type)
        {
            case TensorElementType.F32:
                src.CopyTo(MemoryMarshal.AsBytes(values));
                break;
            case TensorElementType.F16:
                for (int i = 0; i < values.Length; i++) values[i] = (float)BinaryPrimitives.ReadHalfLittleEndian(src[(2 * i)..]);
                break;
            case TensorElementType.BF16:
                for (int i = 0; i < values.Length; i++) values[i] = BitConverter.UInt32BitsToSingle((uint)BinaryPrimitives.ReadUInt16LittleEndian(src[(2 * i)..]) << 16);
                break;
            case TensorElementType.U8:
                for (int i = 0; i < values.Length; i++) values[i] = src[i];
                break;
            case TensorElementType.I16:
                for (int i = 0; i < values.Length; i++) values[i] = BinaryPrimitives.ReadInt16LittleEndian(src[(2 * i)..]);
                break;
            case TensorElementType.I32:
                for (int i = 0; i < values.Length; i++) values[i] = BinaryPrimitives.ReadInt32LittleEndian(src[(4 * i)..]);
                break;
            case TensorElementType.I64:
                for (int i = 0; i < values.Length; i++) values[i] = BinaryPrimitives.ReadInt64LittleEndian(src[(8 * i)..]);
                break;
        }
    }

    /// <summary>Byte-plane shuffle: all first bytes, then all second bytes... (exponent bytes compress far better together).</summary>
    private static void Shuffle(ReadOnlySpan<byte> src, Span<byte> dst, int width)
    {
        int n = src.Length / width;
        for (int b = 0; b < width; b++)
        {
            var plane = dst.Slice(b * n, n);
            for (int i = 0; i < n; i++) plane[i] = src[i * width + b];
        }
    }

    private static void Unshuffle(ReadOnlySpan<byte> src, Span<byte> dst, int width)
    {
        int n = src.Length / width;
        for (int b = 0; b < width; b++)
        {
            var plane = src.Slice(b * n, n);
            for (int i = 0; i < n; i++) dst[i * width + b] = plane[i];
        }
    }
}
