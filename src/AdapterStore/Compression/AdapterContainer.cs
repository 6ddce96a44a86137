using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Serving.AdapterStore.Compression;

/// <summary>The container is damaged or not one of ours; says where and why.</summary>
public sealed class ContainerFormatException(string message) : FormatException(message);

/// <summary>
/// Versioned, self-describing binary container for a compressed adapter:
/// <c>"CPFT" | u16 version | u8 codec | u8 flags | u32 header length | header (JSON, zstd when flag bit 0) | body | u64 XxHash64 of everything before</c>.
/// The header carries the manifest of the decoded adapter, every tensor's name/shape/dtype, and the codec's entries
/// (ComPEFT: one per group with σ, α, density, the position coding and its sections; lossless and quant: the zstd
/// stream). Version 2 added the quant codec, the SVD basis (the manifest then holds the re-factored ranks) and
/// ComPEFT's α modes and magnitude codes; version-1 containers (ComPEFT reference and lossless) read back unchanged.
/// </summary>
public static class AdapterContainer
{
    /// <summary>Format version written.</summary>
    public const ushort FormatVersion = 2;

    /// <summary>Oldest format version read.</summary>
    public const ushort OldestReadableVersion = 1;
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

    /// <summary>Encodes a payload (<see cref="AdapterCodec.Auto"/> picks a setting first, see <see cref="AutoCodec"/>).</summary>
    public static byte[] Encode(AdapterPayload payload, CodecOptions options) =>
        options.Codec == AdapterCodec.Auto && payload.Manifest.Kind == AdapterKind.Lora
            ? AutoCodec.Choose(payload, options.Auto).Container
            : Encode(payload, options.Codec == AdapterCodec.Auto ? options with { Codec = AdapterCodec.Lossless } : options, out _);

    internal static byte[] Encode(AdapterPayload payload, CodecOptions options, out ContainerHeader header)
    {
        if (options.Codec == AdapterCodec.Auto) throw new ArgumentException("Resolve codec auto with AutoCodec.Choose first.", nameof(options));
        options.Validate();
        var codec = payload.Manifest.Kind == AdapterKind.Lora ? options.Codec : AdapterCodec.Lossless;
        var body = new MemoryStream();
        header = codec switch
        {
            AdapterCodec.ComPeft => ComPeftCodec.Encode(payload, options.ComPeft, body),
            AdapterCodec.Quant => QuantCodec.Encode(payload, options.Quant, body),
            _ => LosslessCodec.Encode(payload, options.ZstdLevel, body),
        };
        header = header with { Setting = codec == options.Codec ? options.Describe() : "lossless" };
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
        if (version < OldestReadableVersion || version > FormatVersion)
            throw new ContainerFormatException($"Container format version {version} is not supported (this build reads {OldestReadableVersion}–{FormatVersion}).");
        if (version == 1 && data[6] is not ((byte)AdapterCodec.ComPeft or (byte)AdapterCodec.Lossless))
            throw new ContainerFormatException($"Codec byte {data[6]} does not exist in format version 1.");
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
        if (header.Codec is not (AdapterCodec.ComPeft or AdapterCodec.Lossless or AdapterCodec.Quant)) throw new ContainerFormatException($"Unknown codec {header.Codec}.");
        if ((byte)header.Codec != data[6]) throw new ContainerFormatException($"Header codec {header.Codec} disagrees with the prefix byte {data[6]}.");
        foreach (var t in header.Tensors)
        {
            // The codecs read names as given (a lossy codec sorts tensors into A and B by them): check them here, once.
            if (t is null || string.IsNullOrEmpty(t.Name)) throw new ContainerFormatException("Container header lists a tensor without a name.");
            if (header.Codec != AdapterCodec.Lossless && !t.Name.EndsWith(".lora_A.weight", StringComparison.Ordinal) && !t.Name.EndsWith(".lora_B.weight", StringComparison.Ordinal))
                throw new ContainerFormatException($"Tensor '{t.Name}' in a {header.Codec} container is neither lora_A nor lora_B.");
        }
        body = data[(PrefixSize + (int)headerLength)..^TrailerSize];
        return header;
    }

    /// <summary>Decodes a container into the adapter's tensors (the lossy values for ComPEFT and quant, exact values for lossless).</summary>
    public static AdapterPayload Decode(ReadOnlySpan<byte> data)
    {
        var header = ReadHeader(data, out var body);
        var tensors = header.Codec switch
        {
            AdapterCodec.ComPeft => ComPeftCodec.Decode(header, body),
            AdapterCodec.Quant => QuantCodec.Decode(header, body),
            _ => LosslessCodec.Decode(header, body),
        };
        return new AdapterPayload(header.Manifest, tensors);
    }

    /// <summary>The codec setting a container was written with (format v2; null for v1).</summary>
    public static string? SettingOf(ReadOnlySpan<byte> data) => ReadHeader(data, out _).Setting;

    internal static string GroupOf(string tensorName) =>
        tensorName.EndsWith(".lora_A.weight", StringComparison.Ordinal) ? "A"
        : tensorName.EndsWith(".lora_B.weight", StringComparison.Ordinal) ? "B"
        : throw new ArgumentException($"Tensor '{tensorName}' is neither lora_A nor lora_B; lossy codecs store LoRA factors only.");

    /// <summary>Decompresses a zstd section into exactly <paramref name="rawLength"/> bytes.</summary>
    internal static byte[] Unzstd(ReadOnlySpan<byte> compressed, long rawLength)
    {
        if (rawLength < 0 || rawLength > Array.MaxLength) throw new ContainerFormatException("Implausible raw length.");
        var raw = new byte[rawLength];
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
        return raw;
    }

    internal static long CheckShape(TensorEntry t)
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

    internal static ReadOnlySpan<byte> Section(ReadOnlySpan<byte> body, long offset, long length, string what)
    {
        if (offset < 0 || length < 0 || offset > body.Length || length > body.Length - offset)
            throw new ContainerFormatException($"Section for {what} [{offset}, +{length}) lies outside the {body.Length}-byte body.");
        return body.Slice((int)offset, (int)length);
    }
}

internal sealed record TensorEntry(string Name, long[] Shape, TensorElementType SourceType, string Group, long Offset, long Count);

/// <summary>A ComPEFT group; the properties after the positional ones are format v2 (absent in v1: α only).</summary>
internal sealed record GroupEntry(
    string Name, int Count, double Density, double Factor, double Sigma, float Alpha, float Threshold, int Kept,
    PositionCoding PositionCoding, int RiceParameter, long PositionsOffset, long PositionsLength, long PositionsBits,
    long SignsOffset, long SignsLength)
{
    public AlphaMode? AlphaMode { get; init; }
    public int MagnitudeBits { get; init; }
    public float[]? Levels { get; init; }
    public long MagnitudesOffset { get; init; }
    public long MagnitudesLength { get; init; }
    public long MagnitudesBits { get; init; }
    public int Components { get; init; }
    public long ScalesOffset { get; init; }
    public long ScalesLength { get; init; }
}

internal sealed record LosslessEntry(int ZstdLevel, long Offset, long Length, long RawLength);

internal sealed record ContainerHeader(
    AdapterCodec Codec, AdapterManifest Manifest, IReadOnlyList<TensorEntry> Tensors, IReadOnlyList<GroupEntry>? Groups, LosslessEntry? Lossless)
{
    /// <summary>Format v2: the quant codec's stream.</summary>
    public QuantEntry? Quant { get; init; }

    /// <summary>Format v2: <see cref="CodecOptions.Describe"/> of the setting that wrote the container.</summary>
    public string? Setting { get; init; }
}
