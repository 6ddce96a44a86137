using System.Text;
using Serving.Inference.Sampling;

namespace Serving.Inference.Node.OpenAI.Tools;

/// <summary>A choice's text read for calls (non-streamed, and at the end of a stream).</summary>
internal static class ToolOutput
{
    /// <summary>
    /// The calls and content of <paramref name="text"/>: a forced call's JSON, or the model's own format. Text that
    /// does not parse is content, with <paramref name="error"/> saying why.
    /// </summary>
    public static ToolCallParse Read(ToolRequest tools, string text, out string? error)
    {
        if (!tools.Forced) return tools.Parser.Parse(text, out error);
        return ToolConstraint.Parse(tools, text, out error) is { } calls ? new ToolCallParse(null, calls) : ToolCallParse.Text(text);
    }

    /// <summary>The calls as the response writes them, each with a new id.</summary>
    public static List<ToolCallOut> Wire(IReadOnlyList<ParsedToolCall> calls) =>
        [.. calls.Select(c => new ToolCallOut(ToolRequest.NewCallId(), "function", new FunctionCallOut(c.Name, c.Arguments)))];

    /// <summary>OpenAI's finish reason of a choice that made calls: <c>tool_calls</c> unless it was cut off or aborted.</summary>
    public static string FinishReason(FinishReason? finish, bool calls) =>
        calls && finish is not (Sampling.FinishReason.Length or Sampling.FinishReason.Abort) ? "tool_calls" : finish?.ToOpenAIString() ?? "stop";
}

/// <summary>
/// One streamed choice's text as the tool parser sees it: content goes out as soon as no call can begin in it, what
/// may be a call is withheld until the choice ends, then it goes out as <c>tool_calls</c> deltas, or as content when
/// it does not parse. A forced call withholds everything (its output is JSON, not text for the client).
/// </summary>
internal sealed class ToolCallStream(ToolRequest tools)
{
    private readonly StringBuilder _text = new();
    private int _emitted;

    /// <summary>Adds a token's text; returns the content that may go out now (empty while withheld).</summary>
    public string Append(string? text)
    {
        if (!string.IsNullOrEmpty(text)) _text.Append(text);
        if (tools.Forced) return string.Empty;
        var all = _text.ToString();
        var safe = Math.Max(tools.Parser.SafeContentLength(all), _emitted);
        if (safe == _emitted) return string.Empty;
        var content = all[_emitted..safe];
        _emitted = safe;
        return content;
    }

    /// <summary>
    /// At the choice's end: its calls (none when it made none or they do not parse), and the withheld text that is
    /// content after all.
    /// </summary>
    public (IReadOnlyList<ParsedToolCall> Calls, string Content, string? Error) Finish()
    {
        var all = _text.ToString();
        var parse = ToolOutput.Read(tools, all, out var error);
        if (parse.Calls.Count > 0) return (parse.Calls, string.Empty, null);
        return ([], all[_emitted..], error);
    }
}
