using Serving.AdapterStore.Compression;

namespace Serving.AdapterStore.Tests.Compression;

/// <summary>Containers with a valid checksum but lying headers: the decoder must refuse each with a format error, never crash or over-read.</summary>
public sealed class HostileContainerTests
{
    private static (ContainerHeader Header, byte[] Body) Valid(AdapterCodec codec, bool magnitudes = false)
    {
        var options = magnitudes
            ? new CodecOptions { Codec = AdapterCodec.ComPeft, ComPeft = new() { Density = 0.3, Scope = ThresholdScope.PerTensor, Alpha = AlphaMode.Component, MagnitudeBits = 2 } }
            : new CodecOptions { Codec = codec, ComPeft = new() { Density = 0.3 } };
        var bytes = AdapterContainer.Encode(TestAdapters.Gpt2Lora(1, 16, 2, 3), options);
        var header = AdapterContainer.ReadHeader(bytes, out var body);
        return (header, body.ToArray());
    }

    public static TheoryData<string> ComPeftLies => new()
    {
        "positions_offset_past_body", "positions_length_negative", "signs_past_body", "kept_more_than_count", "kept_off_by_one",
        "count_mismatch", "tensor_offset_gap", "shape_count_mismatch", "negative_dimension", "rice_parameter_huge", "coding_flip",
    };

    [Theory]
    [MemberData(nameof(ComPeftLies))]
    public void Decode_LyingComPeftHeader_ThrowsFormatException(string lie)
    {
        var (h, body) = Valid(AdapterCodec.ComPeft);
        var g = h.Groups![0];
        var t = h.Tensors[1];
        var tensors = h.Tensors.ToList();
        var groups = h.Groups.ToList();
        switch (lie)
        {
            case "positions_offset_past_body": groups[0] = g with { PositionsOffset = body.Length + 5 }; break;
            case "positions_length_negative": groups[0] = g with { PositionsLength = -1 }; break;
            case "signs_past_body": groups[0] = g with { SignsLength = body.Length }; break;
            case "kept_more_than_count": groups[0] = g with { Kept = g.Count + 1 }; break;
            case "kept_off_by_one": groups[0] = g with { Kept = g.Kept + 1 }; break;
            case "count_mismatch": groups[0] = g with { Count = g.Count + 1 }; break;
            case "tensor_offset_gap": tensors[1] = t with { Offset = t.Offset + 1 }; break;
            case "shape_count_mismatch": tensors[1] = t with { Shape = [t.Shape[0], t.Shape[1] + 1] }; break;
            case "negative_dimension": tensors[1] = t with { Shape = [-t.Shape[0], t.Shape[1]] }; break;
            case "rice_parameter_huge": groups[0] = g with { PositionCoding = PositionCoding.Rice, RiceParameter = 99 }; break;
            case "coding_flip": groups[0] = g with { PositionCoding = g.PositionCoding == PositionCoding.Rice ? PositionCoding.Bitmap : PositionCoding.Rice, RiceParameter = 0 }; break;
        }
        var hostile = AdapterContainer.Assemble(h with { Tensors = tensors, Groups = groups }, body);
        Assert.Throws<ContainerFormatException>(() => AdapterContainer.Decode(hostile));
    }

    [Theory]
    [InlineData("raw_length_large")]
    [InlineData("raw_length_small")]
    [InlineData("section_past_body")]
    [InlineData("tensor_past_raw")]
    [InlineData("missing_section")]
    public void Decode_LyingLosslessHeader_ThrowsFormatException(string lie)
    {
        var (h, body) = Valid(AdapterCodec.Lossless);
        var l = h.Lossless!;
        var tensors = h.Tensors.ToList();
        var header = lie switch
        {
            "raw_length_large" => h with { Lossless = l with { RawLength = l.RawLength + 100 } },
            "raw_length_small" => h with { Lossless = l with { RawLength = l.RawLength - 100 } },
            "section_past_body" => h with { Lossless = l with { Length = l.Length + 1 } },
            "tensor_past_raw" => h with { Tensors = [.. tensors.Take(tensors.Count - 1), tensors[^1] with { Offset = l.RawLength }] },
            _ => h with { Lossless = null },
        };
        Assert.Throws<ContainerFormatException>(() => AdapterContainer.Decode(AdapterContainer.Assemble(header, body)));
    }

    [Theory]
    [InlineData(AdapterCodec.ComPeft, "renamed")]
    [InlineData(AdapterCodec.ComPeft, "unnamed")]
    [InlineData(AdapterCodec.Quant, "renamed")]
    [InlineData(AdapterCodec.Quant, "unnamed")]
    [InlineData(AdapterCodec.Lossless, "unnamed")]
    public void Decode_TensorNameALossyCodecCannotGroup_ThrowsFormatException(AdapterCodec codec, string lie)
    {
        // Found by tools/fuzz (target container): a lossy codec sorted tensors into A and B by name and threw
        // ArgumentException, or NullReferenceException for a null name, instead of refusing the container.
        var (h, body) = Valid(codec);
        var tensors = h.Tensors.ToList();
        tensors[0] = tensors[0] with { Name = lie == "renamed" ? tensors[0].Name.Replace("lora_A", "lora_7", StringComparison.Ordinal) : null! };
        var e = Assert.Throws<ContainerFormatException>(() => AdapterContainer.Decode(AdapterContainer.Assemble(h with { Tensors = tensors }, body)));
        Assert.Contains(lie == "renamed" ? "neither lora_A nor lora_B" : "without a name", e.Message);
    }

    [Fact]
    public void Decode_CorruptedBodyWithFixedChecksum_NeverThrowsAnythingButFormatErrorsOrDecodes()
    {
        var (h, body) = Valid(AdapterCodec.ComPeft);
        var rng = new Random(42);
        for (int trial = 0; trial < 200; trial++)
        {
            var damaged = (byte[])body.Clone();
            damaged[rng.Next(damaged.Length)] ^= (byte)(1 << rng.Next(8));
            try
            {
                var payload = AdapterContainer.Decode(AdapterContainer.Assemble(h, damaged));
                Assert.Equal(h.Tensors.Count, payload.Tensors.Count);
            }
            catch (ContainerFormatException)
            {
                // refused with a reason: fine
            }
        }
    }

    [Theory]
    [InlineData("levels_missing")]
    [InlineData("levels_short")]
    [InlineData("bits_too_many")]
    [InlineData("codes_short")]
    [InlineData("scales_past_body")]
    [InlineData("components_wrong")]
    public void Decode_LyingComPeftV2Header_ThrowsFormatException(string lie)
    {
        var (h, body) = Valid(AdapterCodec.ComPeft, magnitudes: true);
        var groups = h.Groups!.ToList();
        var g = groups[0];
        groups[0] = lie switch
        {
            "levels_missing" => g with { Levels = null },
            "levels_short" => g with { Levels = g.Levels![..2] },
            "bits_too_many" => g with { MagnitudeBits = 9 },
            "codes_short" => g with { MagnitudesBits = g.MagnitudesBits - 2 },
            "scales_past_body" => g with { ScalesOffset = body.Length },
            _ => g with { Components = g.Components + 1 },
        };
        Assert.Throws<ContainerFormatException>(() => AdapterContainer.Decode(AdapterContainer.Assemble(h with { Groups = groups }, body)));
    }

    [Theory]
    [InlineData("side_raw_length")]
    [InlineData("side_past_body")]
    [InlineData("symbols_truncated")]
    [InlineData("symbols_past_body")]
    [InlineData("tensor_offset_gap")]
    [InlineData("rank_grown")]
    [InlineData("vector_shape")]
    [InlineData("missing_entry")]
    public void Decode_LyingQuantHeader_ThrowsFormatException(string lie)
    {
        var (h, body) = Valid(AdapterCodec.Quant);
        var q = h.Quant!;
        var tensors = h.Tensors.ToList();
        var t = tensors[0];
        var header = lie switch
        {
            "side_raw_length" => h with { Quant = q with { SideRawLength = q.SideRawLength + 3 } },
            "side_past_body" => h with { Quant = q with { SideLength = body.Length + 1 } },
            "symbols_truncated" => h with { Quant = q with { SymbolsLength = q.SymbolsLength / 3 } },
            "symbols_past_body" => h with { Quant = q with { SymbolsOffset = body.Length } },
            "tensor_offset_gap" => h with { Tensors = [t, tensors[1] with { Offset = tensors[1].Offset + 1 }, .. tensors.Skip(2)] },
            "rank_grown" => h with { Tensors = [t with { Shape = [t.Shape[0] + 1, t.Shape[1]], Count = (t.Shape[0] + 1) * t.Shape[1] }, .. tensors.Skip(1)] },
            "vector_shape" => h with { Tensors = [t with { Shape = [t.Count] }, .. tensors.Skip(1)] },
            _ => h with { Quant = null },
        };
        Assert.Throws<ContainerFormatException>(() => AdapterContainer.Decode(AdapterContainer.Assemble(header, body)));
    }

    [Theory]
    [InlineData(AdapterCodec.Quant, false)]
    [InlineData(AdapterCodec.ComPeft, true)]
    public void Decode_CorruptedV2BodyWithFixedChecksum_NeverThrowsAnythingButFormatErrorsOrDecodes(AdapterCodec codec, bool magnitudes)
    {
        var (h, body) = Valid(codec, magnitudes);
        var rng = new Random(43);
        for (int trial = 0; trial < 200; trial++)
        {
            var damaged = (byte[])body.Clone();
            damaged[rng.Next(damaged.Length)] ^= (byte)(1 << rng.Next(8));
            try
            {
                var payload = AdapterContainer.Decode(AdapterContainer.Assemble(h, damaged));
                Assert.Equal(h.Tensors.Count, payload.Tensors.Count);
            }
            catch (ContainerFormatException)
            {
                // refused with a reason: fine
            }
        }
    }
}
