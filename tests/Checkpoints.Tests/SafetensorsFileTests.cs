using System.Buffers.Binary;
using System.Text;
using Serving.Checkpoints;
using Xunit;

namespace Serving.Checkpoints.Tests;

public sealed class SafetensorsFileTests
{
    private static byte[] Raw(string header, int dataBytes, bool pad = false)
    {
        var h = Encoding.UTF8.GetBytes(header);
        if (pad) h = [.. h, .. Encoding.ASCII.GetBytes("      ")];
        var bytes = new byte[8 + h.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)h.Length);
        h.CopyTo(bytes, 8);
        return bytes;
    }

    private static SafetensorsFormatException Rejects(byte[] bytes) =>
        Assert.Throws<SafetensorsFormatException>(() => SafetensorsFile.Parse(bytes, "test.safetensors").Dispose());

    [Fact]
    public void Parse_WriterOutput_RoundTripsF32F16Bf16AndI64()
    {
        var values = new[] { 1f, -2.5f, 3.25f, 0f, 65504f, -1e-3f };
        var bf16 = new ushort[values.Length];
        for (var i = 0; i < values.Length; i++) bf16[i] = (ushort)(BitConverter.SingleToInt32Bits(values[i]) >> 16);
        var bytes = SafetensorsWriter.ToBytes(
        [
            SafetensorsWriter.Entry.F32("a", [2, 3], values),
            SafetensorsWriter.Entry.F16("b", [6], values),
            new SafetensorsWriter.Entry("c", SafetensorsDType.BF16, [3, 2], System.Runtime.InteropServices.MemoryMarshal.AsBytes(bf16.AsSpan()).ToArray()),
            SafetensorsWriter.Entry.I64("d", [2], [7, -9]),
        ], new Dictionary<string, string> { ["format"] = "pt" });

        using var file = SafetensorsFile.Parse(bytes);
        Assert.Equal(values, file.ReadFloat32("a", [2, 3]));
        Assert.Equal(values.Select(v => (float)(Half)v), file.ReadFloat32("b"));
        Assert.Equal(values.Select(v => BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(v) & unchecked((int)0xFFFF0000))), file.ReadFloat32("c"));
        Assert.Equal([7L, -9L], file.ReadInt64("d"));
        Assert.Equal("pt", file.Metadata["format"]);
    }

    [Fact]
    public void Open_MemoryMappedFile_ReadsSameValuesAsParse()
    {
        var path = Path.GetTempFileName();
        try
        {
            SafetensorsWriter.Write(path, [SafetensorsWriter.Entry.F32("w", [4], [1, 2, 3, 4])]);
            using var file = SafetensorsFile.Open(path);
            Assert.Equal([1f, 2, 3, 4], file.ReadFloat32("w"));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Parse_HeaderPaddedWithSpaces_IsAccepted()
    {
        using var file = SafetensorsFile.Parse(Raw("""{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", 4, pad: true));
        Assert.Single(file.Tensors);
    }

    [Fact]
    public void Parse_TruncatedFile_NamesTheProblem()
    {
        var e = Rejects([1, 2, 3]);
        Assert.Contains("8-byte header length", e.Message);
    }

    [Fact]
    public void Parse_TruncatedData_ReportsTensorBeyondBuffer()
    {
        var full = SafetensorsWriter.ToBytes([SafetensorsWriter.Entry.F32("w", [4], [1, 2, 3, 4])]);
        var e = Rejects(full[..^4]);
        Assert.Equal("w", e.TensorName);
        Assert.Contains("beyond the data buffer", e.Message);
    }

    [Fact]
    public void Parse_HeaderLengthBeyondFile_Rejected()
    {
        var bytes = Raw("{}", 0);
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, 1000);
        Assert.Contains("beyond the end of the file", Rejects(bytes).Message);
    }

    [Fact]
    public void Parse_HeaderLengthOverLimit_Rejected()
    {
        var bytes = Raw("{}", 0);
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, ulong.MaxValue);
        Assert.Contains("limit", Rejects(bytes).Message);
    }

    [Fact]
    public void Parse_NonJsonHeader_Rejected()
    {
        Assert.Contains("not valid JSON", Rejects(Raw("{not json", 0)).Message);
        Assert.Contains("does not start with '{'", Rejects(Raw("[1,2]", 0)).Message);
    }

    [Fact]
    public void Parse_InvalidUtf8Header_Rejected()
    {
        var bytes = Raw("{\"a\":1}", 0);
        bytes[10] = 0xFF;
        Assert.IsType<SafetensorsFormatException>(Rejects(bytes));
    }

    [Fact]
    public void Parse_OverlappingOffsets_NamesBothTensors()
    {
        var e = Rejects(Raw("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", 12));
        Assert.Equal("b", e.TensorName);
        Assert.Contains("overlap tensor 'a'", e.Message);
    }

    [Fact]
    public void Parse_HoleInBuffer_Rejected()
    {
        var e = Rejects(Raw("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8));
        Assert.Contains("hole", e.Message);
    }

    [Fact]
    public void Parse_TrailingBytes_Rejected()
    {
        Assert.Contains("trailing bytes", Rejects(Raw("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", 8)).Message);
    }

    [Fact]
    public void Parse_OutOfRangeOffsets_Rejected()
    {
        var e = Rejects(Raw("""{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}""", 4));
        Assert.Contains("beyond the data buffer", e.Message);
        Assert.Contains("is before begin", Rejects(Raw("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}""", 4)).Message);
        Assert.Contains("non-negative", Rejects(Raw("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}""", 4)).Message);
    }

    [Fact]
    public void Parse_ShapeSizeMismatch_NamesTensorAndSizes()
    {
        var e = Rejects(Raw("""{"w":{"dtype":"F16","shape":[3],"data_offsets":[0,8]}}""", 8));
        Assert.Equal("w", e.TensorName);
        Assert.Contains("needs 6 bytes but data_offsets span 8", e.Message);
    }

    [Fact]
    public void Parse_UnknownDtype_Rejected()
    {
        var e = Rejects(Raw("""{"w":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}}""", 4));
        Assert.Contains("unknown dtype 'F12'", e.Message);
    }

    [Fact]
    public void Parse_DuplicateTensorName_Rejected()
    {
        var e = Rejects(Raw("""{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8));
        Assert.Contains("duplicate", e.Message);
    }

    [Fact]
    public void Parse_MissingFields_Rejected()
    {
        Assert.Contains("'shape'", Rejects(Raw("""{"w":{"dtype":"F32","data_offsets":[0,4]}}""", 4)).Message);
        Assert.Contains("'dtype'", Rejects(Raw("""{"w":{"shape":[1],"data_offsets":[0,4]}}""", 4)).Message);
        Assert.Contains("data_offsets", Rejects(Raw("""{"w":{"dtype":"F32","shape":[1]}}""", 4)).Message);
        Assert.Contains("non-negative integer", Rejects(Raw("""{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}""", 4)).Message);
    }

    [Fact]
    public void Parse_BadMetadata_Rejected()
    {
        Assert.Contains("__metadata__", Rejects(Raw("""{"__metadata__":{"a":1}}""", 0)).Message);
    }

    [Fact]
    public void Get_MissingTensor_NamesIt()
    {
        using var file = SafetensorsFile.Parse(SafetensorsWriter.ToBytes([SafetensorsWriter.Entry.F32("w", [1], [1])]));
        var e = Assert.Throws<SafetensorsFormatException>(() => file.ReadFloat32("nope"));
        Assert.Equal("nope", e.TensorName);
        Assert.Contains("missing tensor", e.Message);
    }

    [Fact]
    public void ReadFloat32_WrongExpectedShape_Rejected()
    {
        using var file = SafetensorsFile.Parse(SafetensorsWriter.ToBytes([SafetensorsWriter.Entry.F32("w", [2, 2], [1, 2, 3, 4])]));
        var e = Assert.Throws<SafetensorsFormatException>(() => file.ReadFloat32("w", [4, 1]));
        Assert.Contains("does not match the expected [4, 1]", e.Message);
    }
}
