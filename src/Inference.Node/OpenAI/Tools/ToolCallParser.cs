using System.Text;
using System.Text.Json;

namespace Serving.Inference.Node.OpenAI.Tools;

/// <summary>One call the model made: the function's name and its arguments as JSON text.</summary>
public sealed record ParsedToolCall(string Name, string Arguments);

/// <summary>What an output holds: the text for <c>content</c> (null when none) and the calls (empty: plain text).</summary>
public sealed record ToolCallParse(string? Content, IReadOnlyList<ParsedToolCall> Calls)
{
    /// <summary>An output that is only text.</summary>
    public static ToolCallParse Text(string text) => new(text, []);
}

/// <summary>
/// Reads tool calls out of a model's text in one model family's format (vLLM's tool parsers). A parser is a pure
/// function of the text: <see cref="Parse"/> for a whole output, <see cref="SafeContentLength"/> for a stream's text so
/// far (how much may go out as content before a call could begin).
/// </summary>
public abstract class ToolCallParser
{
    /// <summary>The option value naming the parser (<c>--Node:ToolCallParser</c>).</summary>
    public abstract string Name { get; }

    /// <summary>
    /// True when the format's markers are special tokens the detokenizer would drop: the request then keeps special
    /// tokens in its text (as vLLM does for these parsers).
    /// </summary>
    public virtual bool NeedsSpecialTokens => false;

    /// <summary>
    /// The output's calls and content. Text in the format that does not parse (a truncated call, malformed JSON, a call
    /// without a name) gives no calls: the whole text is the content, with <paramref name="error"/> saying why.
    /// </summary>
    public abstract ToolCallParse Parse(string text, out string? error);

    /// <summary>
    /// Of a stream's text so far, the length that is content for certain: before any call marker, and short of a
    /// suffix that could be the start of one. The rest is withheld until more text decides it.
    /// </summary>
    public abstract int SafeContentLength(string text);

    /// <summary>Length of the longest suffix of <paramref name="text"/> that is a proper prefix of <paramref name="marker"/>.</summary>
    protected static int PartialMarkerAtEnd(string text, string marker)
    {
        for (var n = Math.Min(marker.Length - 1, text.Length); n > 0; n--)
        {
            if (text.AsSpan(text.Length - n).SequenceEqual(marker.AsSpan(0, n))) return n;
        }
        return 0;
    }

    /// <summary>
    /// One call object: <c>name</c> (a non-empty string) and the arguments under <paramref name="argumentKeys"/> (an
    /// object, or a string holding JSON, as some fine-tunes write it); null with <paramref name="error"/> otherwise.
    /// </summary>
    protected static ParsedToolCall? ReadCall(JsonElement call, string[] argumentKeys, out string? error)
    {
        error = null;
        if (call.ValueKind != JsonValueKind.Object) return Fail("a call is not a JSON object", out error);
        if (!call.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String || name.GetString() is not { Length: > 0 } n)
        {
            return Fail("a call has no \"name\" string", out error);
        }
        foreach (var key in argumentKeys)
        {
            if (!call.TryGetProperty(key, out var args)) continue;
            switch (args.ValueKind)
            {
                case JsonValueKind.Object:
                    return new ParsedToolCall(n, args.GetRawText());
                case JsonValueKind.String:
                    var s = args.GetString()!;
                    try
                    {
                        using var doc = JsonDocument.Parse(s);
                        if (doc.RootElement.ValueKind == JsonValueKind.Object) return new ParsedToolCall(n, s);
                    }
                    catch (JsonException)
                    {
                    }
                    return Fail($"the arguments of '{n}' are a string that is not a JSON object", out error);
                case JsonValueKind.Null:
                    return new ParsedToolCall(n, "{}");
                default:
                    return Fail($"the arguments of '{n}' are not a JSON object", out error);
            }
        }
        return new ParsedToolCall(n, "{}");
    }

    /// <summary>
    /// JSON values one after another in <paramref name="text"/> (whitespace or <paramref name="separator"/> between
    /// them); null when something else stands between or after them.
    /// </summary>
    protected static List<JsonElement>? ReadJsonValues(string text, char? separator = null)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        var values = new List<JsonElement>();
        var pos = 0;
        while (true)
        {
            while (pos < bytes.Length && (bytes[pos] is (byte)' ' or (byte)'\n' or (byte)'\r' or (byte)'\t' || (separator is char sep && bytes[pos] == sep))) pos++;
            if (pos == bytes.Length) return values;
            var reader = new Utf8JsonReader(bytes.AsSpan(pos), new JsonReaderOptions { AllowMultipleValues = true });
            try
            {
                if (!JsonElement.TryParseValue(ref reader, out var value) || value is not { } v) return null;
                values.Add(v.Clone());
            }
            catch (JsonException)
            {
                return null;
            }
            pos += (int)reader.BytesConsumed;
        }
    }

    private static ParsedToolCall? Fail(string reason, out string? error)
    {
        error = reason;
        return null;
    }
}

/// <summary>The parsers and the choice among them.</summary>
public static class ToolCallParsers
{
    /// <summary>Hermes-style <c>&lt;tool_call&gt;{...}&lt;/tool_call&gt;</c> (Qwen2.5, Qwen3, Hermes, many fine-tunes).</summary>
    public const string Hermes = "hermes";

    /// <summary>Llama 3.x JSON (<c>{"name": ..., "parameters": ...}</c>, optionally after <c>&lt;|python_tag|&gt;</c>).</summary>
    public const string Llama3Json = "llama3_json";

    /// <summary>Mistral's <c>[TOOL_CALLS]</c>.</summary>
    public const string Mistral = "mistral";

    /// <summary>Detect from the chat template (the default).</summary>
    public const string Auto = "auto";

    /// <summary>The values <c>--Node:ToolCallParser</c> takes.</summary>
    public static readonly string[] Names = [Auto, Hermes, Llama3Json, Mistral];

    /// <summary>The parser named, or for <see cref="Auto"/> the one the template's text points at (Hermes when it names none).</summary>
    public static ToolCallParser Resolve(string option, string templateSource) => option switch
    {
        Hermes => new HermesToolCallParser(),
        Llama3Json => new Llama3JsonToolCallParser(),
        Mistral => new MistralToolCallParser(),
        Auto => Detect(templateSource),
        _ => throw new ArgumentException($"Unknown tool call parser '{option}'; use one of {string.Join(", ", Names)}.", nameof(option)),
    };

    /// <summary>The format a chat template teaches: its own markers decide.</summary>
    public static ToolCallParser Detect(string templateSource)
    {
        if (templateSource.Contains("[TOOL_CALLS]", StringComparison.Ordinal)) return new MistralToolCallParser();
        if (templateSource.Contains("<tool_call>", StringComparison.Ordinal)) return new HermesToolCallParser();
        if (templateSource.Contains("<|python_tag|>", StringComparison.Ordinal)
            || (templateSource.Contains("<|start_header_id|>", StringComparison.Ordinal) && templateSource.Contains("\"parameters\"", StringComparison.Ordinal)))
        {
            return new Llama3JsonToolCallParser();
        }
        return new HermesToolCallParser();
    }
}
