using System.Text.Json;

namespace Serving.Inference.Node.OpenAI.Tools;

/// <summary>
/// Llama 3.x JSON calls: the whole output is one or more <c>{"name": ..., "parameters": {...}}</c> objects (separated
/// by <c>;</c>), optionally after <c>&lt;|python_tag|&gt;</c> and ending in <c>&lt;|eom_id|&gt;</c>/<c>&lt;|eot_id|&gt;</c>.
/// An output that does not start with one is content.
/// </summary>
public sealed class Llama3JsonToolCallParser : ToolCallParser
{
    /// <summary>Llama 3.1's marker before a call (a special token).</summary>
    public const string PythonTag = "<|python_tag|>";

    private static readonly string[] ArgumentKeys = ["parameters", "arguments"];
    private static readonly string[] EndTokens = ["<|eom_id|>", "<|eot_id|>", "<|end_of_text|>"];

    /// <inheritdoc/>
    public override string Name => ToolCallParsers.Llama3Json;

    /// <inheritdoc/>
    public override bool NeedsSpecialTokens => true;

    /// <inheritdoc/>
    public override ToolCallParse Parse(string text, out string? error)
    {
        error = null;
        var body = text.TrimStart();
        var tagged = body.StartsWith(PythonTag, StringComparison.Ordinal);
        if (tagged) body = body[PythonTag.Length..];
        body = body.Trim();
        foreach (var end in EndTokens)
        {
            if (body.EndsWith(end, StringComparison.Ordinal)) body = body[..^end.Length].TrimEnd();
        }
        if (!body.StartsWith('{'))
        {
            if (tagged) error = "<|python_tag|> is not followed by a JSON call";
            return ToolCallParse.Text(text);
        }
        if (ReadJsonValues(body, ';') is not { Count: > 0 } values)
        {
            error = "the output is not JSON calls separated by ';'";
            return ToolCallParse.Text(text);
        }
        var calls = new List<ParsedToolCall>(values.Count);
        foreach (var value in values)
        {
            if (ReadCall(value, ArgumentKeys, out error) is not { } call) return ToolCallParse.Text(text);
            calls.Add(call);
        }
        return new ToolCallParse(null, calls);
    }

    /// <inheritdoc/>
    public override int SafeContentLength(string text)
    {
        var i = 0;
        while (i < text.Length && char.IsWhiteSpace(text[i])) i++;
        if (i == text.Length) return 0; // only whitespace so far: a call may still begin
        var rest = text.AsSpan(i);
        if (rest[0] == '{') return 0;
        if (PythonTag.AsSpan().StartsWith(rest.Length < PythonTag.Length ? rest : rest[..PythonTag.Length])) return 0;
        return text.Length; // begins with prose: this format has no call after it
    }
}
