using Serving.AdapterStore.Compression;
using Serving.AdapterStore.Peft;
using Serving.Checkpoints;

namespace Serving.AdapterStore.Tests.Compression;

/// <summary>
/// Containers written by the format-v1 code (Fixtures/containers-v1, see its README) must keep decoding to exactly
/// what that code decoded them to: stored adapters stay usable across the format change.
/// </summary>
public sealed class ContainerV1Tests
{
    private static string Dir => Path.Combine(AppContext.BaseDirectory, "Fixtures", "containers-v1");

    private static AdapterPayload Food()
    {
        string smoke = Path.Combine(AppContext.BaseDirectory, "Fixtures", "forge-smoke");
        var shape = BaseModelShape.FromConfig(ModelConfig.Load(Path.Combine(smoke, "config.json")));
        return PeftAdapterReader.Read(File.ReadAllBytes(Path.Combine(smoke, "food", "adapter_config.json")),
            File.ReadAllBytes(Path.Combine(smoke, "food", "adapter_model.safetensors")), shape).Payload;
    }

    [Theory]
    [InlineData("compeft-global-d0.1")]
    [InlineData("compeft-pertensor-d0.3-f1.5")]
    public void Decode_V1ComPeftContainer_EqualsWhatV1CodeDecoded(string name)
    {
        var bytes = File.ReadAllBytes(Path.Combine(Dir, $"food.{name}.v1.cpft"));
        Assert.Equal(1, BitConverter.ToUInt16(bytes, 4));
        var decoded = AdapterContainer.Decode(bytes);
        using var expected = SafetensorsFile.Open(Path.Combine(Dir, $"food.{name}.v1.decoded.safetensors"));
        Assert.Equal(expected.Tensors.Count, decoded.Tensors.Count);
        foreach (var t in decoded.Tensors)
        {
            var want = expected.ReadFloat32(t.Name);
            Assert.Equal(want.Select(BitConverter.SingleToInt32Bits), t.Data.Select(BitConverter.SingleToInt32Bits));
        }
        Assert.Equal(Food().Manifest.Modules, decoded.Manifest.Modules);
        var (naive, _) = NaiveContainer.Decode(bytes);
        foreach (var t in decoded.Tensors) Assert.Equal(naive[t.Name].Data, t.Data);
    }

    [Fact]
    public void Decode_V1LosslessContainer_EqualsTheUpload()
    {
        var bytes = File.ReadAllBytes(Path.Combine(Dir, "food.lossless.v1.cpft"));
        var decoded = AdapterContainer.Decode(bytes);
        var upload = Food();
        Assert.Equal(upload.Manifest.Modules, decoded.Manifest.Modules);
        foreach (var t in upload.Tensors) Assert.Equal(t.Data, decoded.Find(t.Name)!.Data);
        Assert.Null(AdapterContainer.SettingOf(bytes));
    }

    [Fact]
    public void Encode_ReferenceComPeft_WritesVersion2WithTheSameTensorsAsV1()
    {
        var v1 = AdapterContainer.Decode(File.ReadAllBytes(Path.Combine(Dir, "food.compeft-global-d0.1.v1.cpft")));
        var bytes = AdapterContainer.Encode(Food(), new CodecOptions { Codec = AdapterCodec.ComPeft });
        Assert.Equal(AdapterContainer.FormatVersion, BitConverter.ToUInt16(bytes, 4));
        var v2 = AdapterContainer.Decode(bytes);
        foreach (var t in v1.Tensors) Assert.Equal(t.Data, v2.Find(t.Name)!.Data);
    }

    [Fact]
    public void Decode_V1ContainerWithQuantCodecByte_IsRefused()
    {
        var bytes = File.ReadAllBytes(Path.Combine(Dir, "food.lossless.v1.cpft"));
        bytes[6] = (byte)AdapterCodec.Quant;
        var e = Assert.Throws<ContainerFormatException>(() => AdapterContainer.ReadHeader(bytes, out _));
        Assert.Contains("version 1", e.Message);
    }
}
