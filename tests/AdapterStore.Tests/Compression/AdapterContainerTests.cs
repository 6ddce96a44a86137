using Serving.AdapterStore.Compression;

namespace Serving.AdapterStore.Tests.Compression;

public sealed class AdapterContainerTests
{
    private static AdapterPayload Single(params float[][] tensors)
    {
        // One module per pair (A, B); shapes are [1, n] and [n, 1] so any lengths fit.
        var list = new List<AdapterTensor>();
        var modules = new List<ModuleSpec>();
        for (int i = 0; i < tensors.Length; i++)
        {
            string role = i % 2 == 0 ? "A" : "B";
            int m = i / 2;
            long[] shape = role == "A" ? [1, tensors[i].Length] : [tensors[i].Length, 1];
            list.Add(new AdapterTensor($"base_model.model.transformer.h.{m}.attn.c_proj.lora_{role}.weight", shape, tensors[i], TensorElementType.F32));
        }
        return new AdapterPayload(new AdapterManifest { Kind = AdapterKind.Lora, Architecture = "gpt2", Modules = modules }, list);
    }

    private static void AssertMatchesReference(AdapterPayload payload, double density, double factor)
    {
        var bytes = AdapterContainer.Encode(payload, new CodecOptions { Codec = AdapterCodec.ComPeft, ComPeft = new ComPeftOptions { Density = density, Factor = factor } });
        var decoded = AdapterContainer.Decode(bytes);
        foreach (string g in new[] { "A", "B" })
        {
            var members = payload.Tensors.Where(t => AdapterContainer.GroupOf(t.Name) == g).ToList();
            var flat = members.SelectMany(t => t.Data).ToArray();
            var expected = ComPeftReference.Apply(flat, density, factor, out _);
            var actual = members.SelectMany(t => decoded.Find(t.Name)!.Data).ToArray();
            Assert.Equal(expected.Length, actual.Length);
            for (int i = 0; i < expected.Length; i++)
            {
                if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]) && !(expected[i] == 0 && actual[i] == 0))
                {
                    Assert.Fail($"group {g} element {i}: reference {expected[i]:R}, decoded {actual[i]:R}");
                }
            }
        }
    }

    [Theory]
    [InlineData(1, 0.05)]
    [InlineData(2, 0.1)]
    [InlineData(3, 0.2)]
    [InlineData(4, 0.3)]
    [InlineData(5, 0.9)]
    public void Decode_RandomAdapter_EqualsReferenceExactly(int seed, double density)
    {
        var payload = TestAdapters.Gpt2Lora(layers: 2, d: 32, rank: 4, seed);
        AssertMatchesReference(payload, density, factor: 1.0);
        AssertMatchesReference(payload, density, factor: 2.5);
    }

    [Theory]
    [InlineData(0.1)]
    [InlineData(0.3)]
    public void Decode_PerTensorScope_EqualsReferenceAppliedToEachTensor(double density)
    {
        var payload = TestAdapters.Gpt2Lora(layers: 2, d: 32, rank: 4, seed: 12);
        var options = new CodecOptions { Codec = AdapterCodec.ComPeft, ComPeft = new ComPeftOptions { Density = density, Scope = ThresholdScope.PerTensor } };
        var decoded = AdapterContainer.Decode(AdapterContainer.Encode(payload, options));
        foreach (var t in payload.Tensors)
        {
            var expected = ComPeftReference.Apply(t.Data, density, 1.0, out _);
            Assert.Equal(expected, decoded.Find(t.Name)!.Data);
            Assert.True(decoded.Find(t.Name)!.Data.Count(v => v != 0) >= (int)Math.Floor(t.Data.Length * density), "every tensor keeps its share");
        }
    }

    [Fact]
    public void Decode_AllZeroTensor_EqualsReferenceAndIsZero()
    {
        var payload = Single(new float[64], new float[64]);
        AssertMatchesReference(payload, 0.1, 1.0);
        var decoded = AdapterContainer.Decode(AdapterContainer.Encode(payload, new CodecOptions { Codec = AdapterCodec.ComPeft }));
        Assert.All(decoded.Tensors.SelectMany(t => t.Data), v => Assert.Equal(0f, v));
    }

    [Fact]
    public void Decode_TiesAtThreshold_KeepsEveryTie()
    {
        // 20 values, density 0.1 → k = 2, but four values share the largest magnitude: all four are kept.
        var a = new float[20];
        for (int i = 0; i < 20; i++) a[i] = 0.01f * (i % 5);
        a[3] = 0.5f; a[7] = -0.5f; a[11] = 0.5f; a[19] = -0.5f;
        var payload = Single(a, [1f, 2f, 3f]);
        AssertMatchesReference(payload, 0.1, 1.0);
        var decoded = AdapterContainer.Decode(AdapterContainer.Encode(payload, new CodecOptions { Codec = AdapterCodec.ComPeft, ComPeft = new() { Density = 0.1 } }));
        Assert.Equal(4, decoded.Tensors[0].Data.Count(v => v != 0));
    }

    [Fact]
    public void Decode_DensityOne_KeepsEveryNonZeroValue()
    {
        var rng = new Random(7);
        var a = TestAdapters.Gaussian(rng, 300, 1);
        a[5] = 0;
        var payload = Single(a, TestAdapters.Gaussian(rng, 100, 1));
        AssertMatchesReference(payload, 1.0, 1.0);
        var decoded = AdapterContainer.Decode(AdapterContainer.Encode(payload, new CodecOptions { Codec = AdapterCodec.ComPeft, ComPeft = new() { Density = 1.0 } }));
        Assert.Equal(299, decoded.Tensors[0].Data.Count(v => v != 0));
    }

    [Fact]
    public void Decode_SingleTensorPerGroup_EqualsReference()
    {
        var rng = new Random(11);
        AssertMatchesReference(Single(TestAdapters.Gaussian(rng, 1000, 0.1), TestAdapters.Gaussian(rng, 10, 0.1)), 0.2, 1.0);
    }

    [Fact]
    public void Decode_SingleElementGroup_ZeroSigmaGivesZero()
    {
        AssertMatchesReference(Single([3f], [-2f]), 1.0, 1.0);
    }

    [Fact]
    public void Encode_SparseGroup_UsesRiceAndDenseGroupUsesBitmap()
    {
        var payload = TestAdapters.Gpt2Lora(1, 64, 8, seed: 3);
        var sparse = AdapterContainer.ReadHeader(AdapterContainer.Encode(payload, new CodecOptions { Codec = AdapterCodec.ComPeft, ComPeft = new() { Density = 0.05 } }), out _);
        var dense = AdapterContainer.ReadHeader(AdapterContainer.Encode(payload, new CodecOptions { Codec = AdapterCodec.ComPeft, ComPeft = new() { Density = 0.9 } }), out _);
        Assert.All(sparse.Groups!, g => Assert.Equal(PositionCoding.Rice, g.PositionCoding));
        Assert.All(dense.Groups!, g => Assert.Equal(PositionCoding.Bitmap, g.PositionCoding));
    }

    [Theory]
    [InlineData(TensorElementType.F16)]
    [InlineData(TensorElementType.BF16)]
    [InlineData(TensorElementType.F32)]
    public void Lossless_RoundTrip_IsBitExact(TensorElementType type)
    {
        var payload = TestAdapters.Gpt2Lora(2, 32, 4, seed: 9, type);
        var decoded = AdapterContainer.Decode(AdapterContainer.Encode(payload, new CodecOptions { Codec = AdapterCodec.Lossless }));
        foreach (var t in payload.Tensors)
        {
            var d = decoded.Find(t.Name)!;
            Assert.Equal(t.Shape, d.Shape);
            Assert.Equal(type, d.SourceType);
            Assert.Equal(t.Data, d.Data);
        }
        Assert.Equal(payload.Manifest.Modules, decoded.Manifest.Modules);
    }

    [Fact]
    public void Decode_FlippedByte_ThrowsChecksumMismatch()
    {
        var bytes = AdapterContainer.Encode(TestAdapters.Gpt2Lora(1, 16, 2, 1), new CodecOptions { Codec = AdapterCodec.ComPeft });
        bytes[bytes.Length / 2] ^= 0x40;
        var e = Assert.Throws<ContainerFormatException>(() => AdapterContainer.Decode(bytes));
        Assert.Contains("checksum", e.Message);
    }

    [Fact]
    public void Decode_Truncated_ThrowsFormatError()
    {
        var bytes = AdapterContainer.Encode(TestAdapters.Gpt2Lora(1, 16, 2, 1), new CodecOptions { Codec = AdapterCodec.ComPeft });
        Assert.Throws<ContainerFormatException>(() => AdapterContainer.Decode(bytes.AsSpan(0, bytes.Length - 20)));
        Assert.Throws<ContainerFormatException>(() => AdapterContainer.Decode(bytes.AsSpan(0, 5)));
    }

    [Fact]
    public void Decode_OtherVersion_IsRefusedWithTheVersion()
    {
        var bytes = AdapterContainer.Encode(TestAdapters.Gpt2Lora(1, 16, 2, 1), new CodecOptions { Codec = AdapterCodec.ComPeft });
        bytes[4] = 9;
        var e = Assert.Throws<ContainerFormatException>(() => AdapterContainer.Decode(bytes));
        Assert.Contains("version 9", e.Message);
    }

    [Fact]
    public void Encode_Density01OnGpt2Shape_IsAtLeast16xSmallerThanFp16()
    {
        var payload = TestAdapters.Gpt2Lora(layers: 2, d: 256, rank: 16, seed: 5);
        long fp16 = 2 * payload.Tensors.Sum(t => t.ElementCount);
        var bytes = AdapterContainer.Encode(payload, new CodecOptions { Codec = AdapterCodec.ComPeft, ComPeft = new() { Density = 0.1 } });
        Assert.True(fp16 / (double)bytes.Length >= 16, $"ratio {fp16 / (double)bytes.Length:F1}");
    }
}
