using System.Text;
using System.Text.Json;
using Serving.Gateway.Api;

namespace Serving.Gateway.Tests.Api;

public sealed class RequestFieldsTests
{
    [Fact]
    public void Parse_TopLevelFields_FoundAndNestedIgnored()
    {
        var json = Encoding.UTF8.GetBytes("""{"messages":[{"role":"user","content":"hi","model":"nested"}],"model":"gpt2:x","max_tokens":12,"n":2,"stream":true}""");
        var f = RequestFields.Parse(json);
        Assert.Equal("gpt2:x", f.Model);
        Assert.Equal(12, f.MaxTokens);
        Assert.Equal(2, f.N);
        Assert.Equal("\"gpt2:x\"", Encoding.UTF8.GetString(json, f.ModelStart, f.ModelLength));
    }

    [Theory]
    [InlineData("[1,2]")]
    [InlineData("{\"model\": 3}")]
    [InlineData("{\"model\": \"x\"")]
    public void Parse_Malformed_Throws(string text) => Assert.ThrowsAny<JsonException>(() => RequestFields.Parse(Encoding.UTF8.GetBytes(text)));
}
