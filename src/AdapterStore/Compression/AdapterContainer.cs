using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Serving.AdapterStore.Compression;

/// <summary>Which codec stores the tensors.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<AdapterCodec>))]
public enum AdapterCodec
{
    /// <summary>Lossy ComPEFT (sparse ternary) for LoRA A/B.</summary>
    ComPeft,
    /// <summary>Lossless: tensors in their uploaded dtype, byte-shuffled, zstd.</summary>
    Lossless,
}

/// <summary>Codec choice and parameters for one upload.</summary>
public sealed record CodecOptions
{
    /// <summary>Codec; VeRA and VB-LoRA are always stored losslessly (they are already tiny, and ternarising a shared random basis would destroy it).</summary>
    public AdapterCodec Codec { get; init; } = AdapterCodec.ComPeft;
    /// <summary>ComPEFT density and α factor.</summary>
    public ComPeftOptions ComPeft { get; init; } = new();
    /// <summary>zstd level for the lossless codec.</summary>
    public int ZstdLevel { get; init; } = 9;
}

/// <summary>The container is damaged or not one of ours; says where and why.</summary>
public sealed class ContainerFormatException(string message) : FormatException(message);

/// <summary>
/// Versioned, self-describing binary container for a compressed adapter:
/// <c>"CPFT" | u16 version | u8 codec | u8 flags | u32 header length | header (JSON, zstd when flag bit 0) | body | u64 XxHash64 of everything before</c>.
/// The header carries the manifest, every tensor's name/shape/dtype, and for ComPEFT one entry per group (A, B)
/// with σ, α, density, the position coding and the offsets of its sections in the body.
/// </summary>
public static class AdapterContainer
{
    /// <summary>Current format version.</summary>
    public const ushort FormatVersion = 1;
    private static ReadOnlySpan<byte> Magic => "CPFT"u8;
    private const int PrefixSize = 12;
    private const int TrailerSize = 8;
    private const int MaxHeaderBytes = 16 << 20;
    private const byte HeaderZstdFlag = 1;

    internal static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>Encodes a payload; returns the container bytes and the ternarised/decoded result for error reporting.</summary>
    public static byte[] Encode(AdapterPayload payload, CodecOptions options) => Encode(payload, options, out _);

    internal static byte[] Encode(AdapterPayload payload, CodecOptions options, out ContainerHeader header)
    {
        var codec = payload.Manifest.Kind == AdapterKind.Lora ? options.Codec : AdapterCodec.Lossless;
        var body = new MemoryStream();
        header = codec == AdapterCodec.ComPeft
            ? EncodeComPeft(payload, options.ComPeft, body)
            : EncodeLossless(payload, options.ZstdLevel, body);

        return Assemble(header, body.GetBuffer().AsSpan(0, (int)body.Length));
    }

    /// <summary>Writes prefix, header, body and checksum (also used by tests to build hostile but well-checksummed containers).</summary>
    internal static byte[] Assemble(ContainerHeader header, ReadOnlySpan<byte> body)
    {
        var codec = header.Codec;
        byte[] headerJson = JsonSerializer.SerializeToUtf8Bytes(header, Json);
        // Tensor names repeat a lot: zstd makes the header ~10x smaller, which matters next to a 0.6-bit-per-weight body.
        byte[] headerBytes;
        using (var hc = new ZstdSharp.Compressor(19)) headerBytes = hc.Wrap(headerJson).ToArray();
        byte flags = HeaderZstdFlag;
        if (headerBytes.Length >= headerJson.Length)
        {
            headerBytes = headerJson;
            flags = 0;
        }
        int total = PrefixSize + headerBytes.Length + body.Length + TrailerSize;
        var result = new byte[total];
        Magic.CopyTo(result);
        BinaryPrimitives.WriteUInt16LittleEndian(result.AsSpan(4), FormatVersion);
        result[6] = (byte)codec;
        result[7] = flags;
        BinaryPrimitives.WriteUInt32LittleEndian(result.AsSpan(8), (uint)headerBytes.Length);
        headerBytes.CopyTo(result.AsSpan(PrefixSize));
        body.CopyTo(result.AsSpan(PrefixSize + headerBytes.Length));
        ulong hash = XxHash64.HashToUInt64(result.AsSpan(0, total - TrailerSize));
        BinaryPrimitives.WriteUInt64LittleEndian(result.AsSpan(total - TrailerSize), hash);
        return result;
    }

    /// <summary>The container's own checksum (XxHash64 stored in the trailer), as 16 hex digits.</summary>
    public static string ChecksumOf(ReadOnlySpan<byte> container)
    {
        if (container.Length < PrefixSize + TrailerSize) throw new ContainerFormatException("Container too short.");
        return BinaryPrimitives.ReadUInt64LittleEndian(container[^TrailerSize..]).ToString("x16");
    }

    /// <summary>Reads the header after checking magic, version and checksum.</summary>
    internal static ContainerHeader ReadHeader(ReadOnlySpan<byte> data, out ReadOnlySpan<byte> body)
    {
        if (data.Length < PrefixSize + TrailerSize) throw new ContainerFormatException($"Container of {data.Length} bytes is shorter than the fixed prefix and trailer.");
        if (!data[..4].SequenceEqual(Magic)) throw new ContainerFormatException("Not an adapter container (bad magic).");
        ushort version = BinaryPrimitives.ReadUInt16LittleEndian(data[4..]);
        if (version != FormatVersion) throw new ContainerFormatException($"Container format version {version} is not supported (this build reads {FormatVersion}).");
        ulong stored = BinaryPrimitives.ReadUInt64LittleEndian(data[^TrailerSize..]);
        ulong actual = XxHash64.HashToUInt64(data[..^TrailerSize]);
        if (stored != actual) throw new ContainerFormatException($"Container checksum mismatch: stored {stored:x16}, computed {actual:x16}.");
        uint headerLength = BinaryPrimitives.ReadUInt32LittleEndian(data[8..]);
        if (headerLength > MaxHeaderBytes || headerLength > data.Length - PrefixSize - TrailerSize) throw new ContainerFormatException($"Header length {headerLength} exceeds the container.");
        ContainerHeader? header;
        try
        {
            var raw = data.Slice(PrefixSize, (int)headerLength);
            if ((data[7] & HeaderZstdFlag) != 0)
            {
                using var d = new ZstdSharp.Decompressor();
                ulong size = ZstdSharp.Decompressor.GetDecompressedSize(raw);
                if (size > MaxHeaderBytes) throw new ContainerFormatException($"Header decompresses to {size} bytes, more than allowed.");
                raw = d.Unwrap(raw).ToArray();
            }
            header = JsonSerializer.Deserialize<ContainerHeader>(raw, Json);
        }
        catch (ZstdSharp.ZstdException e)
        {
            throw new ContainerFormatException($"Container header is damaged: {e.Message}");
        }
        catch (JsonException e)
        {
            throw new ContainerFormatException($"Container header is not valid JSON: {e.Message}");
        }
        if (header is null || header.Manifest is null || header.Tensors is null) throw new ContainerFormatException("Container header is incomplete.");
        if ((byte)header.Codec != data[6]) throw new ContainerFormatException($"Header codec {header.Codec} disagrees with the prefix byte {data[6]}.");
        body = data[(PrefixSize + (int)headerLength)..^TrailerSize];
        return header;
    }

    /// <summary>Decodes a container into the adapter's tensors (ternary values for ComPEFT, exact values for lossless).</summary>
    public static AdapterPayload Decode(ReadOnlySpan<byte> data)
    {
        var header = ReadHeader(data, out var body);
        var tensors = header.Codec == AdapterCodec.ComPeft ? DecodeComPeft(header, body) : DecodeLossless(header, body);
        return new AdapterPayload(header.Manifest, tensors);
    }

    // ---- ComPEFT ----

    internal static string GroupOf(string tensorName) =>
        tensorName.EndsWith(".lora_A.weight", StringComparison.Ordinal) ? "A"
        : tensorName.EndsWith(".lora_B.weight", StringComparison.Ordinal) ? "B"
        : throw new ArgumentException($"Tensor '{tensorName}' is neither lora_A nor lora_B; ComPEFT stores LoRA factors only.");

    private static ContainerHeader EncodeComPeft(AdapterPayload payload, ComPeftOptions options, MemoryStream body)
    {
        var tensorEntries = new List<TensorEntry>();
        var groups = new List<GroupEntry>();
        foreach (var t in payload.Tensors) _ = GroupOf(t.Name);
        var plan = options.Scope == ThresholdScope.Global
            ? new[] { "A", "B" }.Select(g => (Name: g, Members: payload.Tensors.Where(t => GroupOf(t.Name) == g).ToList())).ToList()
            : payload.Tensors.Select((t, i) => (Name: "t" + i.ToString(System.Globalization.CultureInfo.InvariantCulture), Members: new List<AdapterTensor> { t })).ToList();
        foreach (var (g, members) in plan)
        {
            long n = members.Sum(t => t.ElementCount);
            if (n > int.MaxValue) throw new ArgumentException($"Group {g} has {n} elements; at most {int.MaxValue} are supported.");
            var flat = new float[n];
            int offset = 0;
            foreach (var t in members)
            {
                t.Data.CopyTo(flat, offset);
                tensorEntries.Add(new TensorEntry(t.Name, t.Shape, t.SourceType, g, offset, t.Data.Length));
                offset += t.Data.Length;
            }
            var ternary = ComPeft.Ternarize(flat, options);
            var positions = PositionCode.Encode(ternary.Positions, ternary.Count);
            var signs = new byte[(ternary.Positions.Length + 7) / 8];
            for (int i = 0; i < ternary.Negative.Length; i++)
            {
                if (ternary.Negative[i]) signs[i >> 3] |= (byte)(1 << (i & 7));
            }
            long posOffset = body.Position;
            body.Write(positions.Bytes);
            long signOffset = body.Position;
            body.Write(signs);
            groups.Add(new GroupEntry(g, ternary.Count, options.Density, options.Factor, ternary.Sigma, ternary.Alpha, ternary.Threshold,
                ternary.Positions.Length, positions.Coding, positions.RiceParameter, posOffset, positions.Bytes.Length, positions.BitLength,
                signOffset, signs.Length));
        }
        return new ContainerHeader(AdapterCodec.ComPeft, payload.Manifest, tensorEntries, groups, null);
    }

    private static List<AdapterTensor> DecodeComPeft(ContainerHeader header, ReadOnlySpan<byte> body)
    {
        if (header.Groups is null) throw new ContainerFormatException("ComPEFT container without groups.");
        var result = new List<AdapterTensor>(header.Tensors.Count);
        foreach (var g in header.Groups)
        {
            var members = header.Tensors.Where(t => t.Group == g.Name).ToList();
            long expected = 0;
            var arrays = new float[members.Count][];
            var starts = new int[members.Count];
            for (int i = 0; i < members.Count; i++)
            {
                var t = members[i];
                long elements = CheckShape(t);
                if (t.Offset != expected) throw new ContainerFormatException($"Tensor '{t.Name}' starts at {t.Offset}, expected {expected} in group {g.Name}.");
                arrays[i] = new float[elements];
                starts[i] = (int)expected;
                expected += elements;
            }
            if (expected != g.Count) throw new ContainerFormatException($"Group {g.Name} declares {g.Count} elements, its tensors hold {expected}.");
            if (g.Kept < 0 || g.Kept > g.Count) throw new ContainerFormatException($"Group {g.Name} declares {g.Kept} kept of {g.Count}.");
            var posBytes = Section(body, g.PositionsOffset, g.PositionsLength, $"group {g.Name} positions");
            var signBytes = Section(body, g.SignsOffset, g.SignsLength, $"group {g.Name} signs");
            if (signBytes.Length < (g.Kept + 7) / 8) throw new ContainerFormatException($"Group {g.Name} sign section too short.");
            var positions = new int[g.Kept];
            PositionCode.Decode(g.PositionCoding, g.RiceParameter, posBytes, g.PositionsBits, g.Count, positions);

            float alpha = g.Alpha;
            int ti = 0;
            int tensorEnd = members.Count > 0 ? starts[0] + arrays[0].Length : 0;
            for (int j = 0; j < positions.Length; j++)
            {
                int p = positions[j];
                while (p >= tensorEnd)
                {
                    ti++;
                    tensorEnd = starts[ti] + arrays[ti].Length;
                }
                bool negative = ((signBytes[j >> 3] >> (j & 7)) & 1) != 0;
                arrays[ti][p - starts[ti]] = negative ? -alpha : alpha;
            }
            for (int i = 0; i < members.Count; i++)
            {
                result.Add(new AdapterTensor(members[i].Name, members[i].Shape, arrays[i], members[i].SourceType));
            }
        }
        if (result.Count != header.Tensors.Count) throw new ContainerFormatException("Some tensors belong to no group.");
        return result;
    }

    // ---- Lossless ----

    private static ContainerHeader EncodeLossless(AdapterPayload payload, int level, MemoryStream body)
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

    private static List<AdapterTensor> DecodeLossless(ContainerHeader header, ReadOnlySpan<byte> body)
    {
        var l = header.Lossless ?? throw new ContainerFormatException("Lossless container without its section entry.");
        var compressed = Section(body, l.Offset, l.Length, "zstd section");
        if (l.RawLength < 0 || l.RawLength > Array.MaxLength) throw new ContainerFormatException("Implausible raw length.");
        var raw = new byte[l.RawLength];
        try
        {
            using var d = new ZstdSharp.Decompressor();
            int written = d.Unwrap(compressed, raw);
            if (written != raw.Length) throw new ContainerFormatException($"zstd section decompressed to {written} bytes, header says {raw.Length}.");
        }
        catch (ZstdSharp.ZstdException e)
        {
            throw new ContainerFormatException($"zstd section is damaged: {e.Message}");
        }
        var result = new List<AdapterTensor>(header.Tensors.Count);
        foreach (var t in header.Tensors)
        {
            long elements = CheckShape(t);
            int width = WidthOf(t.SourceType);
            var span = Section(raw, t.Offset, elements * width, $"tensor '{t.Name}'");
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

    private static long CheckShape(TensorEntry t)
    {
        if (t.Shape is null || t.Shape.Length == 0 || t.Shape.Length > 8) throw new ContainerFormatException($"Tensor '{t.Name}' has an invalid shape.");
        long elements = 1;
        foreach (long d in t.Shape)
        {
            if (d <= 0 || d > int.MaxValue) throw new ContainerFormatException($"Tensor '{t.Name}' has dimension {d}.");
            elements *= d;
            if (elements > int.MaxValue) throw new ContainerFormatException($"Tensor '{t.Name}' is too large.");
        }
        if (elements != t.Count) throw new ContainerFormatException($"Tensor '{t.Name}' shape holds {elements} elements, header says {t.Count}.");
        return elements;
    }

    private static ReadOnlySpan<byte> Section(ReadOnlySpan<byte> body, long offset, long length, string what)
    {
        if (offset < 0 || length < 0 || offset > body.Length || length > body.Length - offset)
            throw new ContainerFormatException($"Section for {what} [{offset}, +{length}) lies outside the {body.Length}-byte body.");
        return body.Slice((int)offset, (int)length);
    }
}

internal sealed record TensorEntry(string Name, long[] Shape, TensorElementType SourceType, string Group, long Offset, long Count);

internal sealed record GroupEntry(
    string Name, int Count, double Density, double Factor, double Sigma, float Alpha, float Threshold, int Kept,
    PositionCoding PositionCoding, int RiceParameter, long PositionsOffset, long PositionsLength, long PositionsBits,
    long SignsOffset, long SignsLength);

internal sealed record LosslessEntry(int ZstdLevel, long Offset, long Length, long RawLength);

internal sealed record ContainerHeader(
    AdapterCodec Codec, AdapterManifest Manifest, IReadOnlyList<TensorEntry> Tensors, IReadOnlyList<GroupEntry>? Groups, LosslessEntry? Lossless);
