using System.Text;
using System.Text.Json;
using Serving.Gateway.Tests.Infrastructure;
using Serving.Gateway.Tests.RateLimiting;

namespace Serving.Gateway.Tests.Api;

/// <summary>
/// What the gateway itself refuses in a body before it reserves anything or calls a node: text that is not UTF-8
/// anywhere, and wrong JSON types in the fields it reads. Each is a 400 in OpenAI's shape naming the field.
/// </summary>
[Collection(RedisCollection.Name)]
public sealed class RequestValidationTests(RedisFixture redis)
{
    public static TheoryData<string, string> WrongTypes => new()
    {
        { """{"model":3,"messages":[]}""", "model" },
        { """{"model":"fake","max_tokens":"10"}""", "max_tokens" },
        { """{"model":"fake","max_completion_tokens":1.5}""", "max_completion_tokens" },
        { """{"model":"fake","n":[2]}""", "n" },
        { """{"model":"fake","stream":"true"}""", "stream" },
        { """{"model":"fake","stream_options":"usage"}""", "stream_options" },
        { """{"model":"fake","stream":true,"stream_options":{"include_usage":"yes"}}""", "stream_options.include_usage" },
    };

    [Theory]
    [MemberData(nameof(WrongTypes))]
    public async Task WrongType_400NamingTheField_NothingReserved(string body, string param)
    {
        await using var h = await AccountingHarness.StartAsync(redis.ConnectionString, 6000);
        var (status, text, _) = await h.SendAsync(chat: true, Encoding.UTF8.GetBytes(body));
        Assert.Equal(400, status);
        var error = JsonDocument.Parse(text).RootElement.GetProperty("error");
        Assert.Equal(param, error.GetProperty("param").GetString());
        Assert.Equal("invalid_json", error.GetProperty("code").GetString());
        Assert.Equal("invalid_request_error", error.GetProperty("type").GetString());
        Assert.Empty(h.Node.Received);
        Assert.False(h.HasUnreadSettlement);
        Assert.Equal(6000, h.Available);
    }

    [Theory]
    [InlineData("prompt", new byte[] { 0xff, 0xfe })]
    [InlineData("prompt", new byte[] { 0xc3 })] // a sequence cut short
    [InlineData("prompt", new byte[] { 0xed, 0xa0, 0x80 })] // a surrogate encoded in UTF-8
    [InlineData("messages[0].content", new byte[] { 0x80 })]
    [InlineData("model", new byte[] { 0xff })]
    public async Task InvalidUtf8_400NamingTheField(string field, byte[] bad)
    {
        await using var h = await AccountingHarness.StartAsync(redis.ConnectionString, 6000);
        byte[] body = field switch
        {
            "prompt" => [.. "{\"model\":\"fake\",\"prompt\":\"ab"u8, .. bad, .. "\"}"u8],
            "model" => [.. "{\"model\":\"fa"u8, .. bad, .. "\",\"prompt\":\"x\"}"u8],
            _ => [.. "{\"model\":\"fake\",\"messages\":[{\"role\":\"user\",\"content\":\""u8, .. bad, .. "\"}]}"u8],
        };
        var (status, text, _) = await h.SendAsync(chat: field != "prompt", body);
        Assert.Equal(400, status);
        var error = JsonDocument.Parse(text).RootElement.GetProperty("error");
        Assert.Equal(field, error.GetProperty("param").GetString());
        Assert.Contains("UTF-8", error.GetProperty("message").GetString());
        Assert.Empty(h.Node.Received);
    }

    [Fact]
    public async Task LoneSurrogateEscape_400NamingTheField()
    {
        await using var h = await AccountingHarness.StartAsync(redis.ConnectionString, 6000);
        var (status, text, _) = await h.SendAsync(chat: false, Encoding.UTF8.GetBytes("""{"model":"fake","prompt":"a\ud800b","max_tokens":2}"""));
        Assert.Equal(400, status);
        Assert.Equal("prompt", JsonDocument.Parse(text).RootElement.GetProperty("error").GetProperty("param").GetString());
    }
}
