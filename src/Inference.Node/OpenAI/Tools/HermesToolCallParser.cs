using System.Text.Json;

namespace Serving.Inference.Node.OpenAI.Tools;

/// <summary>
/// Hermes-style calls (Qwen2.5, Qwen3, NousResearch Hermes): each call is
/// <c>&lt;tool_call&gt;{"name": ..., "arguments": {...}}&lt;/tool_call&gt;</c>; text before the first is content. The
/// last call may lack its closing tag (generation stopped at end-of-sequence right after the JSON).
/// </summary>
public sealed class HermesToolCallParser : ToolCallParser
{
    /// <summary>Opens a call.</summary>
    public const string Open = "<tool_call>";

    /// <summary>Closes a call.</summary>
    public const string Close = "</tool_call>";

    private static readonly string[] ArgumentKeys = ["arguments", "parameters"];

    /// <inheritdoc/>
    public override string Name => ToolCallParsers.Hermes;

    /// <inheritdoc/>
    public override ToolCallParse Parse(string text, out string? error)
    {
        error = null;
        var start = text.IndexOf(Open, StringComparison.Ordinal);
        if (start < 0) return ToolCallParse.Text(text);
        var calls = new List<ParsedToolCall>();
        var pos = start;
        while (pos < text.Length)
        {
            if (string.CompareOrdinal(text, pos, Open, 0, Open.Length) != 0)
            {
                error = "text after a call that is not another <tool_call>";
                return ToolCallParse.Text(text);
            }
            var bodyStart = pos + Open.Length;
            var close = text.IndexOf(Close, bodyStart, StringComparison.Ordinal);
            var body = close < 0 ? text[bodyStart..] : text[bodyStart..close];
            var values = ReadJsonValues(body);
            if (values is not [var value])
            {
                error = "a <tool_call> does not hold one JSON object";
                return ToolCallParse.Text(text);
            }
            if (ReadCall(value, ArgumentKeys, out error) is not { } call) return ToolCallParse.Text(text);
            calls.Add(call);
            pos = close < 0 ? text.Length : close + Close.Length;
            while (pos < text.Length && char.IsWhiteSpace(text[pos])) pos++;
        }
        var content = text[..start];
        return new ToolCallParse(string.IsNullOrWhiteSpace(content) ? null : content.TrimEnd(), calls);
    }

    /// <inheritdoc/>
    public override int SafeContentLength(string text)
    {
        var start = text.IndexOf(Open, StringComparison.Ordinal);
        return start >= 0 ? start : text.Length - PartialMarkerAtEnd(text, Open);
    }
}
