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
        Assert.True(f.Stream);
        Assert.False(f.IncludeUsage);
        Assert.Equal(-1, f.StreamOptions.Start);
        Assert.Equal(1, f.BodyStart);
        Assert.Equal("\"gpt2:x\"", Encoding.UTF8.GetString(json, f.ModelStart, f.ModelLength));
    }

    [Fact]
    public void Parse_StreamOptions_RangeAndFlags()
    {
        var json = Encoding.UTF8.GetBytes("""{"model":"m","stream":true,"stream_options": {"include_usage":true, "continuous_usage_stats":true, "x":[1]} ,"n":1}""");
        var f = RequestFields.Parse(json);
        Assert.True(f.IncludeUsage);
        Assert.True(f.ContinuousUsage);
        Assert.Equal("""{"include_usage":true, "continuous_usage_stats":true, "x":[1]}""", Encoding.UTF8.GetString(json, f.StreamOptions.Start, f.StreamOptions.Length));

        // continuous_usage_stats means something only with include_usage (as on the node).
        var alone = RequestFields.Parse(Encoding.UTF8.GetBytes("""{"model":"m","stream_options":{"continuous_usage_stats":true}}"""));
        Assert.False(alone.ContinuousUsage);
    }

    [Fact]
    public void Parse_ChatAndCompletions_ReadTheirOwnMaxTokensAndChoices()
    {
        var json = Encoding.UTF8.GetBytes("""{"model":"m","max_tokens":10,"max_completion_tokens":20,"n":2,"best_of":3}""");
        var chat = RequestFields.Parse(json, chat: true);
        Assert.Equal((20, "max_completion_tokens", 2), (chat.MaxTokens, chat.MaxTokensParam, chat.N));
        var completion = RequestFields.Parse(json, chat: false);
        Assert.Equal((10, "max_tokens", 3), (completion.MaxTokens, completion.MaxTokensParam, completion.N));
    }

    [Theory]
    [InlineData("[1,2]")]
    [InlineData("{\"model\": \"x\"")]
    public void Parse_Malformed_Throws(string text) => Assert.ThrowsAny<JsonException>(() => RequestFields.Parse(Encoding.UTF8.GetBytes(text)));

    [Theory]
    [InlineData("""{"model": 3}""", "model")]
    [InlineData("""{"model": "m", "max_tokens": "12"}""", "max_tokens")]
    [InlineData("""{"model": "m", "max_tokens": 1.5}""", "max_tokens")]
    [InlineData("""{"model": "m", "max_tokens": 1e12}""", "max_tokens")]
    [InlineData("""{"model": "m", "max_completion_tokens": [1]}""", "max_completion_tokens")]
    [InlineData("""{"model": "m", "n": {}}""", "n")]
    [InlineData("""{"model": "m", "stream": "yes"}""", "stream")]
    [InlineData("""{"model": "m", "stream_options": true}""", "stream_options")]
    [InlineData("""{"model": "m", "stream_options": {"include_usage": 1}}""", "stream_options.include_usage")]
    [InlineData("""{"model": "m", "stream_options": {"include_usage": true, "continuous_usage_stats": "x"}}""", "stream_options.continuous_usage_stats")]
    public void Parse_WrongType_NamesTheField(string text, string param)
    {
        var e = Assert.Throws<RequestFieldException>(() => RequestFields.Parse(Encoding.UTF8.GetBytes(text)));
        Assert.Equal(param, e.Param);
    }

    [Fact]
    public void Parse_NullsMeanAbsent()
    {
        var f = RequestFields.Parse(Encoding.UTF8.GetBytes("""{"model":"m","max_tokens":null,"n":null,"stream":null,"stream_options":null}"""));
        Assert.Equal((null, 1, false), (f.MaxTokens, f.N, f.Stream));
    }
}
