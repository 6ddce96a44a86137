using Xunit;
using System.Text;
using System.Text.Json;
using Serving.Inference.Node.OpenAI.Tools;

namespace Serving.Inference.Node.Tests.Tools;

/// <summary>A streamed choice: content goes out until a call may begin, the call comes out whole at the end.</summary>
public sealed class ToolCallStreamTests
{
    private static ToolRequest Auto(ToolCallParser parser) =>
        new([new ToolFunction("get_weather", null, null)], ToolChoiceMode.Auto, null, true, parser);

    private static (string Content, IReadOnlyList<ParsedToolCall> Calls) Feed(ToolCallStream stream, string text, int chunk)
    {
        var content = new StringBuilder();
        for (var i = 0; i < text.Length; i += chunk) content.Append(stream.Append(text.Substring(i, Math.Min(chunk, text.Length - i))));
        var (calls, rest, _) = stream.Finish();
        content.Append(rest);
        return (content.ToString(), calls);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(7)]
    public void Hermes_ContentThenCall_ContentStreamedCallWithheld(int chunk)
    {
        var text = "One moment. <tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Lyon\"}}\n</tool_call>";
        var stream = new ToolCallStream(Auto(new HermesToolCallParser()));
        var (content, calls) = Feed(stream, text, chunk);
        Assert.Equal("One moment. ", content); // nothing of the call leaked as content
        Assert.Equal("get_weather", Assert.Single(calls).Name);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    public void Hermes_TextWithAngleBrackets_AllContentNoCalls(int chunk)
    {
        var text = "Use <b>bold</b> and <tool_ if you like.";
        var (content, calls) = Feed(new ToolCallStream(Auto(new HermesToolCallParser())), text, chunk);
        Assert.Equal(text, content);
        Assert.Empty(calls);
    }

    [Fact]
    public void Hermes_BrokenCall_WithheldTextComesOutAsContent()
    {
        var text = "Hi <tool_call>{\"name\": \"get_weather\", \"argum";
        var (content, calls) = Feed(new ToolCallStream(Auto(new HermesToolCallParser())), text, 2);
        Assert.Equal(text, content);
        Assert.Empty(calls);
    }

    [Fact]
    public void Forced_Required_WithholdsEverythingAndReadsTheJsonList()
    {
        var tools = new ToolRequest([new ToolFunction("get_weather", null, null)], ToolChoiceMode.Required, null, true, new HermesToolCallParser());
        var (content, calls) = Feed(new ToolCallStream(tools), "[{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Nice\"}}]", 5);
        Assert.Equal("", content);
        var call = Assert.Single(calls);
        Assert.Equal("{\"city\": \"Nice\"}", call.Arguments);
    }

    [Fact]
    public void Schema_Required_ListOfCallsOfTheOfferedFunctions()
    {
        var parameters = JsonDocument.Parse("{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}").RootElement;
        var tools = new ToolRequest([new ToolFunction("get_weather", null, parameters), new ToolFunction("noop", null, null)], ToolChoiceMode.Required, null, false,
            new HermesToolCallParser());
        var schema = JsonDocument.Parse(ToolConstraint.Schema(tools)).RootElement;
        Assert.Equal("array", schema.GetProperty("type").GetString());
        Assert.Equal(1, schema.GetProperty("minItems").GetInt32());
        Assert.Equal(1, schema.GetProperty("maxItems").GetInt32()); // parallel_tool_calls: false
        var anyOf = schema.GetProperty("items").GetProperty("anyOf");
        Assert.Equal(2, anyOf.GetArrayLength());
        Assert.Equal("get_weather", anyOf[0].GetProperty("properties").GetProperty("name").GetProperty("const").GetString());
        Assert.True(JsonElement.DeepEquals(parameters, anyOf[0].GetProperty("properties").GetProperty("parameters")));
    }
}
