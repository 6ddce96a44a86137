using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Serving.Inference.Node.OpenAI.Tools;

/// <summary>A function the client offers (<c>tools[i].function</c>).</summary>
/// <param name="Name">1–64 of a-z, A-Z, 0-9, '_', '-'.</param>
/// <param name="Description">What it does, for the model.</param>
/// <param name="Parameters">The JSON schema of its arguments (an object schema); null: no arguments.</param>
public sealed record ToolFunction(string Name, string? Description, JsonElement? Parameters);

/// <summary><c>tool_choice</c>.</summary>
public enum ToolChoiceMode
{
    /// <summary>No call: the output is text (tools are still shown to the template).</summary>
    None,

    /// <summary>The model decides; a call in the output is parsed.</summary>
    Auto,

    /// <summary>At least one call, forced by constrained decoding.</summary>
    Required,

    /// <summary>A call of one named function, forced by constrained decoding.</summary>
    Named,
}

/// <summary>A chat request's tools, validated: what it offers, what it demands, and the parser of this model's format.</summary>
public sealed partial record ToolRequest(IReadOnlyList<ToolFunction> Functions, ToolChoiceMode Choice, string? NamedFunction, bool ParallelCalls, ToolCallParser Parser)
{
    /// <summary>Most tools a request may offer (OpenAI's limit).</summary>
    public const int MaxTools = 128;

    /// <summary>True when the output is read for calls (auto, required, named).</summary>
    public bool ParsesCalls => Choice != ToolChoiceMode.None;

    /// <summary>True when a call is forced (required, named).</summary>
    public bool Forced => Choice is ToolChoiceMode.Required or ToolChoiceMode.Named;

    [GeneratedRegex("^[a-zA-Z0-9_-]{1,64}$")]
    private static partial Regex FunctionName();

    /// <summary>
    /// <c>tools</c>, <c>tool_choice</c> and <c>parallel_tool_calls</c> checked as OpenAI checks them; null when the
    /// request has no tools (and asks for none). Every refusal is a 400 naming the field.
    /// </summary>
    public static ToolRequest? Read(JsonElement tools, JsonElement toolChoice, bool? parallel, ToolCallParser parser)
    {
        var functions = ReadTools(tools);
        var (choice, named) = ReadChoice(toolChoice, functions);
        if (functions is null) return null;
        return new ToolRequest(functions, choice, named, parallel ?? true, parser);
    }

    private static List<ToolFunction>? ReadTools(JsonElement tools)
    {
        if (tools.ValueKind is JsonValueKind.Undefined or JsonValueKind.Null) return null;
        if (tools.ValueKind != JsonValueKind.Array) throw Refusals.Invalid("tools", "tools must be a list of {\"type\": \"function\", \"function\": {...}}.");
        var count = tools.GetArrayLength();
        if (count == 0) throw Refusals.Invalid("tools", "tools must not be empty; leave it out to offer no tools.");
        if (count > MaxTools) throw Refusals.Invalid("tools", $"tools holds {count} tools; at most {MaxTools} are allowed.");
        var functions = new List<ToolFunction>(count);
        var i = 0;
        foreach (var tool in tools.EnumerateArray())
        {
            var at = $"tools[{i}]";
            if (tool.ValueKind != JsonValueKind.Object) throw Refusals.Invalid(at, "Each tool must be an object {\"type\": \"function\", \"function\": {...}}.");
            if (!tool.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String || type.GetString() != "function")
            {
                throw Refusals.Invalid($"{at}.type", "Only tools of type \"function\" are supported.");
            }
            if (!tool.TryGetProperty("function", out var f) || f.ValueKind != JsonValueKind.Object)
            {
                throw Refusals.Invalid($"{at}.function", "A function tool needs a \"function\" object with a name.");
            }
            if (!f.TryGetProperty("name", out var nameValue) || nameValue.ValueKind != JsonValueKind.String || nameValue.GetString() is not { } name || !FunctionName().IsMatch(name))
            {
                throw Refusals.Invalid($"{at}.function.name", "A function's name must be 1–64 characters of a-z, A-Z, 0-9, '_' and '-'.");
            }
            if (functions.Exists(g => g.Name == name)) throw Refusals.Invalid($"{at}.function.name", $"Two tools are named '{name}'; names must be unique.");
            string? description = null;
            if (f.TryGetProperty("description", out var d) && d.ValueKind != JsonValueKind.Null)
            {
                if (d.ValueKind != JsonValueKind.String) throw Refusals.Invalid($"{at}.function.description", "description must be a string.");
                description = d.GetString();
            }
            JsonElement? parameters = null;
            if (f.TryGetProperty("parameters", out var p) && p.ValueKind != JsonValueKind.Null)
            {
                if (p.ValueKind != JsonValueKind.Object) throw Refusals.Invalid($"{at}.function.parameters", "parameters must be a JSON schema object.");
                if (p.TryGetProperty("type", out var pt) && !(pt.ValueKind == JsonValueKind.String && pt.GetString() == "object"))
                {
                    throw Refusals.Invalid($"{at}.function.parameters.type", "A function's parameters are an object: parameters.type must be \"object\".");
                }
                parameters = p.Clone();
            }
            if (f.TryGetProperty("strict", out var strict) && strict.ValueKind is not (JsonValueKind.True or JsonValueKind.False or JsonValueKind.Null))
            {
                throw Refusals.Invalid($"{at}.function.strict", "strict must be true or false.");
            }
            functions.Add(new ToolFunction(name, description, parameters));
            i++;
        }
        return functions;
    }

    private static (ToolChoiceMode, string?) ReadChoice(JsonElement choice, List<ToolFunction>? functions)
    {
        switch (choice.ValueKind)
        {
            case JsonValueKind.Undefined or JsonValueKind.Null:
                return (functions is null ? ToolChoiceMode.None : ToolChoiceMode.Auto, null);
            case JsonValueKind.String:
                var mode = choice.GetString() switch
                {
                    "none" => ToolChoiceMode.None,
                    "auto" => ToolChoiceMode.Auto,
                    "required" => ToolChoiceMode.Required,
                    var other => throw Refusals.Invalid("tool_choice", $"tool_choice '{other}' is not one of none, auto, required, or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}."),
                };
                if (mode != ToolChoiceMode.None && functions is null)
                {
                    throw Refusals.Invalid("tool_choice", $"tool_choice '{choice.GetString()}' needs tools: offer the functions in \"tools\".");
                }
                return (mode, null);
            case JsonValueKind.Object:
                if (!choice.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String || type.GetString() != "function")
                {
                    throw Refusals.Invalid("tool_choice.type", "A named tool_choice is {\"type\": \"function\", \"function\": {\"name\": ...}}.");
                }
                if (!choice.TryGetProperty("function", out var f) || f.ValueKind != JsonValueKind.Object
                    || !f.TryGetProperty("name", out var n) || n.ValueKind != JsonValueKind.String)
                {
                    throw Refusals.Invalid("tool_choice.function.name", "A named tool_choice needs function.name.");
                }
                var name = n.GetString()!;
                if (functions is null) throw Refusals.Invalid("tool_choice", $"tool_choice names '{name}' but the request offers no tools.");
                if (!functions.Exists(g => g.Name == name))
                {
                    throw Refusals.Invalid("tool_choice", $"tool_choice names the function '{name}', which is not among the tools ({string.Join(", ", functions.Select(g => g.Name))}).");
                }
                return (ToolChoiceMode.Named, name);
            default:
                throw Refusals.Invalid("tool_choice", "tool_choice must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}.");
        }
    }

    /// <summary>A new call id, OpenAI's shape (<c>call_</c> and 24 letters and digits).</summary>
    public static string NewCallId() => "call_" + Guid.NewGuid().ToString("N")[..24];

    /// <summary>
    /// The tools as a system-prompt text in the Hermes convention (what Qwen2.5's template writes), for templates that
    /// do not render <c>tools</c> themselves; the calls are asked for in <paramref name="parser"/>'s format.
    /// </summary>
    public string Instruction()
    {
        var sb = new StringBuilder("# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>");
        foreach (var f in Functions)
        {
            sb.Append('\n').Append(FunctionJson(f));
        }
        sb.Append("\n</tools>\n\n");
        sb.Append(Parser switch
        {
            Llama3JsonToolCallParser => "For a function call, respond only with a JSON object {\"name\": function name, \"parameters\": dictionary of argument name and its value}.",
            MistralToolCallParser => "For function calls, respond with [TOOL_CALLS] followed by a JSON list of {\"name\": function name, \"arguments\": arguments object}.",
            _ => "For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
        });
        return sb.ToString();
    }

    /// <summary>The tools as OpenAI's objects, for the template's <c>tools</c> variable.</summary>
    public IReadOnlyList<JsonElement> ToolObjects() => [.. Functions.Select(f => JsonDocument.Parse(FunctionJson(f)).RootElement)];

    /// <summary>One tool as OpenAI's JSON (<c>{"type": "function", "function": {...}}</c>), compact.</summary>
    public static string FunctionJson(ToolFunction f)
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            w.WriteString("type", "function");
            w.WriteStartObject("function");
            w.WriteString("name", f.Name);
            if (f.Description is not null) w.WriteString("description", f.Description);
            if (f.Parameters is { } p)
            {
                w.WritePropertyName("parameters");
                p.WriteTo(w);
            }
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(stream.ToArray());
    }

    /// <summary>An assistant's earlier calls as text in the parser's format (for templates that do not render <c>tool_calls</c>).</summary>
    public static string CallsAsText(ToolCallParser parser, IReadOnlyList<(string Id, string Name, string Arguments)> calls)
    {
        var sb = new StringBuilder();
        switch (parser)
        {
            case MistralToolCallParser:
                sb.Append(MistralToolCallParser.Marker).Append('[');
                for (var i = 0; i < calls.Count; i++)
                {
                    if (i > 0) sb.Append(", ");
                    sb.Append("{\"name\": ").Append(JsonSerializer.Serialize(calls[i].Name)).Append(", \"arguments\": ").Append(calls[i].Arguments).Append('}');
                }
                sb.Append(']');
                break;
            case Llama3JsonToolCallParser:
                for (var i = 0; i < calls.Count; i++)
                {
                    if (i > 0) sb.Append("; ");
                    sb.Append("{\"name\": ").Append(JsonSerializer.Serialize(calls[i].Name)).Append(", \"parameters\": ").Append(calls[i].Arguments).Append('}');
                }
                break;
            default:
                for (var i = 0; i < calls.Count; i++)
                {
                    if (i > 0) sb.Append('\n');
                    sb.Append(HermesToolCallParser.Open).Append("\n{\"name\": ").Append(JsonSerializer.Serialize(calls[i].Name))
                        .Append(", \"arguments\": ").Append(calls[i].Arguments).Append("}\n").Append(HermesToolCallParser.Close);
                }
                break;
        }
        return sb.ToString();
    }
}
