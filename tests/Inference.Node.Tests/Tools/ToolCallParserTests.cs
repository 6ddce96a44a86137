using Xunit;
using System.Text.Json;
using Serving.Inference.Chat;
using Serving.Inference.Node.OpenAI.Tools;

namespace Serving.Inference.Node.Tests.Tools;

/// <summary>The three output formats read from texts as the model families write them; expectations written by hand.</summary>
public sealed class ToolCallParserTests
{
    private static void AssertJsonEqual(string expected, string actual) =>
        Assert.True(JsonElement.DeepEquals(JsonDocument.Parse(expected).RootElement, JsonDocument.Parse(actual).RootElement), $"expected {expected}, got {actual}");

    [Fact]
    public void Hermes_OneCallAfterContent_ContentAndCall()
    {
        var text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"c\"}}\n</tool_call>";
        var parse = new HermesToolCallParser().Parse(text, out var error);
        Assert.Null(error);
        Assert.Equal("Let me check.", parse.Content);
        var call = Assert.Single(parse.Calls);
        Assert.Equal("get_weather", call.Name);
        AssertJsonEqual("{\"city\":\"Paris\",\"unit\":\"c\"}", call.Arguments);
    }

    [Fact]
    public void Hermes_TwoCallsLastUnclosed_BothCallsNoContent()
    {
        var text = "<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": \"{\\\"x\\\": 1}\"}\n";
        var parse = new HermesToolCallParser().Parse(text, out var error);
        Assert.Null(error);
        Assert.Null(parse.Content);
        Assert.Equal(["a", "b"], parse.Calls.Select(c => c.Name));
        AssertJsonEqual("{}", parse.Calls[0].Arguments);
        AssertJsonEqual("{\"x\":1}", parse.Calls[1].Arguments); // arguments written as a JSON string
    }

    [Theory]
    [InlineData("<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": \n")] // cut off by max_tokens
    [InlineData("<tool_call>\n{\"arguments\": {}}\n</tool_call>")] // no name
    [InlineData("<tool_call>\nnot json\n</tool_call>")]
    [InlineData("<tool_call>{\"name\": \"a\", \"arguments\": [1]}</tool_call>")] // arguments not an object
    public void Hermes_MalformedCall_WholeTextIsContent(string text)
    {
        var parse = new HermesToolCallParser().Parse(text, out var error);
        Assert.NotNull(error);
        Assert.Empty(parse.Calls);
        Assert.Equal(text, parse.Content);
    }

    [Fact]
    public void Hermes_PlainText_NoCalls()
    {
        var parse = new HermesToolCallParser().Parse("The weather is fine.", out var error);
        Assert.Null(error);
        Assert.Empty(parse.Calls);
        Assert.Equal("The weather is fine.", parse.Content);
    }

    [Theory]
    [InlineData("Hello <tool", 6)] // a partial marker at the end is withheld
    [InlineData("Hello <tool_call>{\"na", 6)]
    [InlineData("Hello <b>", 9)] // '<' followed by something else is content
    [InlineData("Hello", 5)]
    public void Hermes_SafeContentLength_StopsBeforeAPossibleMarker(string text, int expected) =>
        Assert.Equal(expected, new HermesToolCallParser().SafeContentLength(text));

    [Fact]
    public void Llama3_PythonTagAndTwoCalls_Calls()
    {
        var text = "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Rome\"}}; {\"name\": \"get_time\", \"parameters\": {}}<|eom_id|>";
        var parse = new Llama3JsonToolCallParser().Parse(text, out var error);
        Assert.Null(error);
        Assert.Null(parse.Content);
        Assert.Equal(["get_weather", "get_time"], parse.Calls.Select(c => c.Name));
        AssertJsonEqual("{\"city\":\"Rome\"}", parse.Calls[0].Arguments);
    }

    [Fact]
    public void Llama3_BareJson_Call()
    {
        var parse = new Llama3JsonToolCallParser().Parse(" {\"name\": \"f\", \"parameters\": {\"a\": [1, 2]}}", out var error);
        Assert.Null(error);
        AssertJsonEqual("{\"a\":[1,2]}", Assert.Single(parse.Calls).Arguments);
    }

    [Theory]
    [InlineData("The answer is {\"name\": 1}")]
    [InlineData("{\"name\": \"f\", \"parameters\": {\"a\": ")]
    public void Llama3_ProseOrTruncated_Content(string text)
    {
        var parse = new Llama3JsonToolCallParser().Parse(text, out _);
        Assert.Empty(parse.Calls);
        Assert.Equal(text, parse.Content);
    }

    [Theory]
    [InlineData("  ", 0)]
    [InlineData(" {\"na", 0)]
    [InlineData("<|pyth", 0)]
    [InlineData("Sure, {", 7)]
    public void Llama3_SafeContentLength_WithholdsAJsonStart(string text, int expected) =>
        Assert.Equal(expected, new Llama3JsonToolCallParser().SafeContentLength(text));

    [Fact]
    public void Mistral_JsonList_ContentAndCalls()
    {
        var text = "Checking.[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"q\": \"x\"}}, {\"name\": \"b\", \"arguments\": {}}]</s>";
        var parse = new MistralToolCallParser().Parse(text, out var error);
        Assert.Null(error);
        Assert.Equal("Checking.", parse.Content);
        Assert.Equal(["a", "b"], parse.Calls.Select(c => c.Name));
        AssertJsonEqual("{\"q\":\"x\"}", parse.Calls[0].Arguments);
    }

    [Fact]
    public void Mistral_V11NameArgs_Calls()
    {
        var text = "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Oslo\"}[TOOL_CALLS]get_time[ARGS]{}";
        var parse = new MistralToolCallParser().Parse(text, out var error);
        Assert.Null(error);
        Assert.Equal(["get_weather", "get_time"], parse.Calls.Select(c => c.Name));
        AssertJsonEqual("{\"city\":\"Oslo\"}", parse.Calls[0].Arguments);
    }

    [Fact]
    public void Mistral_Truncated_Content()
    {
        var text = "[TOOL_CALLS][{\"name\": \"a\", \"argu";
        var parse = new MistralToolCallParser().Parse(text, out var error);
        Assert.NotNull(error);
        Assert.Empty(parse.Calls);
    }

    [Theory]
    [InlineData("{% for m in messages %}<tool_call>{% endfor %}", "hermes")]
    [InlineData("{{ '[TOOL_CALLS]' }}", "mistral")]
    [InlineData("<|start_header_id|>ipython{{ '<|python_tag|>' }}", "llama3_json")]
    [InlineData("<|start_header_id|>{\"name\": function name, \"parameters\": dictionary}", "llama3_json")]
    [InlineData(ChatTemplate.DefaultTemplate, "hermes")]
    public void Resolve_Auto_DetectsTheTemplatesFormat(string template, string expected) =>
        Assert.Equal(expected, ToolCallParsers.Resolve("auto", template).Name);

    [Fact]
    public void Resolve_Named_WinsOverTheTemplate() =>
        Assert.Equal("mistral", ToolCallParsers.Resolve("mistral", "<tool_call>").Name);
}
