using System.Text.Json;

namespace Serving.Inference.Node.OpenAI.Tools;

/// <summary>
/// Mistral's calls after <c>[TOOL_CALLS]</c>: a JSON list of <c>{"name", "arguments"}</c> (v0.3 tokenizers) or, from
/// tokenizer v11, <c>name[ARGS]{...}</c> per call (each after its own <c>[TOOL_CALLS]</c>). Text before is content.
/// </summary>
public sealed class MistralToolCallParser : ToolCallParser
{
    /// <summary>The marker (a special token).</summary>
    public const string Marker = "[TOOL_CALLS]";

    /// <summary>v11's separator between a call's name and its arguments.</summary>
    public const string Args = "[ARGS]";

    private static readonly string[] ArgumentKeys = ["arguments", "parameters"];

    /// <inheritdoc/>
    public override string Name => ToolCallParsers.Mistral;

    /// <inheritdoc/>
    public override bool NeedsSpecialTokens => true;

    /// <inheritdoc/>
    public override ToolCallParse Parse(string text, out string? error)
    {
        error = null;
        var start = text.IndexOf(Marker, StringComparison.Ordinal);
        if (start < 0) return ToolCallParse.Text(text);
        var body = text[(start + Marker.Length)..].Trim();
        if (body.EndsWith("</s>", StringComparison.Ordinal)) body = body[..^4].TrimEnd();
        var calls = new List<ParsedToolCall>();
        if (body.StartsWith('['))
        {
            if (ReadJsonValues(body) is not [{ ValueKind: JsonValueKind.Array } list])
            {
                error = "[TOOL_CALLS] is not followed by a JSON list";
                return ToolCallParse.Text(text);
            }
            foreach (var item in list.EnumerateArray())
            {
                if (ReadCall(item, ArgumentKeys, out error) is not { } call) return ToolCallParse.Text(text);
                calls.Add(call);
            }
        }
        else
        {
            foreach (var part in body.Split(Marker, StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
            {
                var args = part.IndexOf(Args, StringComparison.Ordinal);
                var name = args < 0 ? "" : part[..args].Trim();
                if (name.Length == 0 || ReadJsonValues(part[(args + Args.Length)..]) is not [{ ValueKind: JsonValueKind.Object } value])
                {
                    error = "a call is not name[ARGS]{...}";
                    return ToolCallParse.Text(text);
                }
                calls.Add(new ParsedToolCall(name, value.GetRawText()));
            }
        }
        if (calls.Count == 0)
        {
            error = "[TOOL_CALLS] holds no call";
            return ToolCallParse.Text(text);
        }
        var content = text[..start];
        return new ToolCallParse(string.IsNullOrWhiteSpace(content) ? null : content.TrimEnd(), calls);
    }

    /// <inheritdoc/>
    public override int SafeContentLength(string text)
    {
        var start = text.IndexOf(Marker, StringComparison.Ordinal);
        return start >= 0 ? start : text.Length - PartialMarkerAtEnd(text, Marker);
    }
}
