using System.Net;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit;

namespace Serving.Inference.Node.Tests.Http;

/// <summary>
/// Structured output through the node's OpenAI surface: <c>response_format</c> (json_object, json_schema),
/// <c>guided_json</c>, <c>guided_regex</c>, <c>guided_choice</c> on chat and completions, streaming and <c>n</c> &gt; 1,
/// checked by parsing the output (on the demo model: constraints need an end-of-sequence token); and each kind of bad
/// constraint answered 400 naming the field, path or keyword.
/// </summary>
public sealed class StructuredOutputTests(Alignment.DemoRewardNode node) : IClassFixture<Alignment.DemoRewardNode>
{
    private HttpClient Http => node.Server.Http;

    private const string PersonSchema = """{"type":"object","properties":{"name":{"type":"string","maxLength":10},"age":{"type":"integer","minimum":0,"maximum":120},"tags":{"type":"array","items":{"enum":["a","b"]},"maxItems":2}},"required":["name","age"],"additionalProperties":false}""";

    private static JsonObject Chat(string extra, int n = 1, bool stream = false) => JsonNode.Parse(
        $$"""{"model":"demo","messages":[{"role":"user","content":"Who?"}],"max_tokens":90,"temperature":1,"seed":3,"n":{{n}},"stream":{{(stream ? "true" : "false")}},{{extra}}}""")!.AsObject();

    private static void AssertPerson(string text)
    {
        var o = JsonNode.Parse(text)!.AsObject();
        Assert.True(o["name"] is JsonValue name && name.GetValueKind() == System.Text.Json.JsonValueKind.String && ((string)name!).Length <= 10, text);
        var age = (int)o["age"]!;
        Assert.InRange(age, 0, 120);
        Assert.All(o.Select(p => p.Key), k => Assert.Contains(k, new[] { "name", "age", "tags" }));
    }

    [Fact]
    public async Task JsonSchema_ChatWithTwoChoices_BothValidate()
    {
        using var response = await Http.SendAsync(Sse.Post("v1/chat/completions", Chat($$$"""
            "response_format":{"type":"json_schema","json_schema":{"name":"person","schema":{{{PersonSchema}}},"strict":true}}
            """, n: 2)));
        var body = await Sse.JsonAsync(response);
        Assert.True(response.StatusCode == HttpStatusCode.OK, body.ToJsonString());
        foreach (var choice in body["choices"]!.AsArray())
        {
            Assert.Equal("stop", (string)choice!["finish_reason"]!);
            AssertPerson((string)choice["message"]!["content"]!);
        }
    }

    [Fact]
    public async Task JsonSchema_Streamed_ConcatenatedDeltasValidate()
    {
        using var response = await Http.SendAsync(Sse.Post("v1/chat/completions", Chat($$$"""
            "response_format":{"type":"json_schema","json_schema":{"name":"person","schema":{{{PersonSchema}}}}}
            """, stream: true)), HttpCompletionOption.ResponseHeadersRead);
        Assert.True(response.StatusCode == HttpStatusCode.OK, response.StatusCode == HttpStatusCode.OK ? "" : await response.Content.ReadAsStringAsync());
        AssertPerson(Sse.Text(await Sse.ReadAllAsync(response)));
    }

    /// <summary>
    /// A masked token's logprob is −∞, which JSON cannot carry: top alternatives the constraint excluded are written as
    /// −9999 (vLLM's floor), streamed and not, instead of failing the response.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task JsonSchema_WithTopLogprobs_MaskedAlternativesAreWrittenAsTheFloor(bool stream)
    {
        var request = Chat($$$"""
            "logprobs":true,"top_logprobs":20,"response_format":{"type":"json_schema","json_schema":{"name":"person","schema":{{{PersonSchema}}}}}
            """, stream: stream);
        using var response = await Http.SendAsync(Sse.Post("v1/chat/completions", request), HttpCompletionOption.ResponseHeadersRead);
        Assert.True(response.StatusCode == HttpStatusCode.OK, response.StatusCode == HttpStatusCode.OK ? "" : await response.Content.ReadAsStringAsync());
        var raw = await response.Content.ReadAsStringAsync();
        var logprobs = new List<double>();
        foreach (Match m in Regex.Matches(raw, "\"logprob\":(-?[0-9.eE+-]+)")) logprobs.Add(double.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));
        Assert.NotEmpty(logprobs);
        Assert.All(logprobs, lp => Assert.InRange(lp, -9999.0, 0.0));
        // The first token of a JSON object can only be '{': every other alternative was masked.
        Assert.Contains(-9999.0, logprobs);
    }

    [Fact]
    public async Task JsonObject_Chat_ReturnsAnObject()
    {
        using var response = await Http.SendAsync(Sse.Post("v1/chat/completions", Chat("""
            "response_format":{"type":"json_object"}
            """)));
        var body = await Sse.JsonAsync(response);
        Assert.True(response.StatusCode == HttpStatusCode.OK, body.ToJsonString());
        var text = (string)body["choices"]![0]!["message"]!["content"]!;
        Assert.Equal(System.Text.Json.JsonValueKind.Object, System.Text.Json.JsonDocument.Parse(text).RootElement.ValueKind);
    }

    [Fact]
    public async Task GuidedRegexChoiceAndJson_OnCompletions_MatchTheirConstraint()
    {
        async Task<string> Complete(string extra)
        {
            using var response = await Http.SendAsync(Sse.Post("v1/completions", JsonNode.Parse(
                $$"""{"model":"demo","prompt":"Say:","max_tokens":40,"temperature":1,"seed":5,{{extra}}}""")!));
            var body = await Sse.JsonAsync(response);
            Assert.True(response.StatusCode == HttpStatusCode.OK, body.ToJsonString());
            return (string)body["choices"]![0]!["text"]!;
        }
        Assert.Matches(new Regex(@"^[A-Z]{2}-\d{3}(x|yz)?$"), await Complete("""
            "guided_regex":"[A-Z]{2}-\\d{3}(x|yz)?"
            """));
        Assert.Contains(await Complete("""
            "guided_choice":["yes","no","maybe"]
            """), new[] { "yes", "no", "maybe" });
        var n = JsonNode.Parse(await Complete("""
            "guided_json":{"type":"integer","minimum":-3,"maximum":3}
            """))!;
        Assert.InRange((int)n, -3, 3);
    }

    [Theory]
    [InlineData("""{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"integer","multipleOf":3}}}""", "response_format.json_schema.schema", "multipleOf")]
    [InlineData("""{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object","properties":{"a":{"type":"strin"}}}}}""", "response_format.json_schema.schema", "$/properties/a")]
    [InlineData("""{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object","properties":{"a":{"$ref":"#/$defs/missing"}}}}}""", "response_format.json_schema.schema", "#/$defs/missing")]
    [InlineData("""{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"string","format":"hostname"}}}""", "response_format.json_schema.schema", "format")]
    [InlineData("""{"type":"json_schema","json_schema":{"name":"x"}}""", "response_format.json_schema.schema", "schema")]
    [InlineData("""{"type":"xml"}""", "response_format.type", "xml")]
    [InlineData("""{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"string","pattern":"(?=a)b"}}}""", "response_format.json_schema.schema", "lookaround")]
    public async Task BadResponseFormat_400NamingIt(string format, string param, string mention)
    {
        using var response = await Http.SendAsync(Sse.Post("v1/chat/completions", Chat($"\"response_format\":{format}")));
        var error = await RawHttpTests.AssertErrorAsync(response, HttpStatusCode.BadRequest, param, "invalid_request_error");
        Assert.Contains(mention, (string)error["message"]!);
    }

    [Fact]
    public async Task RegexThatMatchesNothing_400()
    {
        using var response = await Http.SendAsync(Sse.Post("v1/chat/completions", Chat("""
            "guided_regex":"a[]b"
            """)));
        var error = await RawHttpTests.AssertErrorAsync(response, HttpStatusCode.BadRequest, "guided_regex", "invalid_request_error");
        Assert.Contains("cannot match", (string)error["message"]!);
    }

    [Fact]
    public async Task TwoConstraints_400()
    {
        using var response = await Http.SendAsync(Sse.Post("v1/chat/completions", Chat("""
            "guided_choice":["a"],"guided_regex":"a"
            """)));
        await RawHttpTests.AssertErrorAsync(response, HttpStatusCode.BadRequest, "guided_choice", "invalid_request_error");
    }
}
