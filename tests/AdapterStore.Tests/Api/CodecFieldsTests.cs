using Serving.AdapterStore.Api;
using Serving.AdapterStore.Compression;

namespace Serving.AdapterStore.Tests.Api;

public sealed class CodecFieldsTests
{
    [Fact]
    public void Parse_NoFields_IsTheDefaultCodecOptions()
    {
        Assert.Equal(new CodecOptions(), CodecFields.Parse(new Dictionary<string, string>()));
        Assert.Equal(AdapterCodec.Auto, CodecFields.Parse(new Dictionary<string, string>()).Codec);
    }

    [Fact]
    public void Parse_EveryField_ReachesItsOption()
    {
        var q = CodecFields.Parse(new Dictionary<string, string>
        {
            ["codec"] = "quant", ["target_error"] = "0.25", ["basis"] = "factors", ["budget"] = "global",
        });
        Assert.Equal(new QuantOptions { TargetError = 0.25, Basis = FactorBasis.Factors, Budget = BudgetScope.Global }, q.Quant);
        var c = CodecFields.Parse(new Dictionary<string, string>
        {
            ["codec"] = "COMPEFT", ["density"] = "0.3", ["scope"] = "per_tensor", ["alpha"] = "component", ["magnitude_bits"] = "2", ["basis"] = "svd", ["energy"] = "0.9",
        });
        Assert.Equal(new ComPeftOptions { Density = 0.3, Scope = ThresholdScope.PerTensor, Alpha = AlphaMode.Component, MagnitudeBits = 2, Basis = FactorBasis.Svd, Energy = 0.9 }, c.ComPeft);
        Assert.Equal(0.8, CodecFields.Parse(new Dictionary<string, string> { ["min_kept"] = "0.8" }).Auto.MinKept);
    }
}
