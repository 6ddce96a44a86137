using Serving.Contracts.Models;

namespace Serving.Gateway.Tests.Routing;

public sealed class ModelIdTests
{
    [Theory]
    [InlineData("gpt2", "gpt2", null, null)]
    [InlineData("gpt2:support", "gpt2", null, "support")]
    [InlineData("gpt2:acme/support", "gpt2", "acme", "support")]
    public void TryParse_ValidForms_SplitsParts(string text, string baseModel, string? tenant, string? adapter)
    {
        Assert.True(ModelId.TryParse(text, out var id));
        Assert.Equal(new ModelId(baseModel, tenant, adapter), id);
        Assert.Equal(text, id.ToString());
    }

    [Theory]
    [InlineData("")]
    [InlineData(":x")]
    [InlineData("gpt2:")]
    [InlineData("gpt2:/x")]
    [InlineData("gpt2:a/")]
    [InlineData("gpt2:a/b/c")]
    public void TryParse_Malformed_False(string text) => Assert.False(ModelId.TryParse(text, out _));
}
