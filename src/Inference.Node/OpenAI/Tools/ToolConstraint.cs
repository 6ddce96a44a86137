using System.Text;
using System.Text.Json;
using Serving.Inference.Constraints;
using Serving.Inference.Scheduling;

namespace Serving.Inference.Node.OpenAI.Tools;

/// <summary>
/// A forced call (<c>tool_choice</c> required or a named function) as vLLM forces it: the output is constrained to a
/// JSON schema, and read as JSON rather than in the model's own call format. A named function's output is its arguments
/// (the function's <c>parameters</c> schema); <c>required</c>'s is a list of <c>{"name", "parameters"}</c> calls, at
/// least one (exactly one with <c>parallel_tool_calls: false</c>), each call's parameters valid against its function's.
/// </summary>
public static class ToolConstraint
{
    /// <summary>The schema the output is held to.</summary>
    public static string Schema(ToolRequest tools)
    {
        if (tools.Choice == ToolChoiceMode.Named)
        {
            var f = tools.Functions.First(g => g.Name == tools.NamedFunction);
            return Parameters(f);
        }
        var sb = new StringBuilder("{\"type\":\"array\",\"minItems\":1,");
        if (!tools.ParallelCalls) sb.Append("\"maxItems\":1,");
        sb.Append("\"items\":{\"anyOf\":[");
        for (var i = 0; i < tools.Functions.Count; i++)
        {
            var f = tools.Functions[i];
            if (i > 0) sb.Append(',');
            sb.Append("{\"type\":\"object\",\"properties\":{\"name\":{\"const\":").Append(JsonSerializer.Serialize(f.Name))
                .Append("},\"parameters\":").Append(Parameters(f)).Append("},\"required\":[\"name\",\"parameters\"],\"additionalProperties\":false}");
        }
        sb.Append("]}}");
        return sb.ToString();
    }

    /// <summary>A function's parameters schema; a function without one takes the empty object.</summary>
    private static string Parameters(ToolFunction f) =>
        f.Parameters is { } p ? p.GetRawText() : "{\"type\":\"object\",\"properties\":{},\"additionalProperties\":false}";

    /// <summary>
    /// The request with its output held to <see cref="Schema"/> (compiled once per schema, cached by its hash); a
    /// function's parameters the constraint engine cannot enforce are a 400 naming the tool, the schema path and the keyword.
    /// </summary>
    public static GenerationRequest Apply(GenerationRequest generation, ToolRequest tools)
    {
        if (generation.Decoding is ConstrainedSpec)
        {
            throw Refusals.Invalid("tool_choice", "A forced tool call constrains the output itself: leave out response_format / guided_* with tool_choice required or a named function.");
        }
        Grammar grammar;
        try
        {
            grammar = Grammar.FromJsonSchema(Schema(tools));
        }
        catch (ConstraintException e)
        {
            var param = tools.Choice == ToolChoiceMode.Named
                ? $"tools[{IndexOf(tools, tools.NamedFunction!)}].function.parameters"
                : "tools";
            var keyword = e.Keyword is null ? "" : $" (keyword '{e.Keyword}')";
            throw Refusals.Invalid(param, $"The function parameters cannot be enforced for a forced call: {e.Message} [schema path {e.Path}{keyword}]");
        }
        return generation with { Decoding = ConstrainedSpec.Wrap(generation.Decoding, grammar) };
    }

    private static int IndexOf(ToolRequest tools, string name)
    {
        for (var i = 0; i < tools.Functions.Count; i++)
        {
            if (tools.Functions[i].Name == name) return i;
        }
        return -1;
    }

    /// <summary>The calls in a forced output (null with <paramref name="error"/> when it is not what the schema demands, e.g. cut off by max_tokens).</summary>
    public static IReadOnlyList<ParsedToolCall>? Parse(ToolRequest tools, string text, out string? error)
    {
        error = null;
        try
        {
            using var doc = JsonDocument.Parse(text);
            var root = doc.RootElement;
            if (tools.Choice == ToolChoiceMode.Named)
            {
                if (root.ValueKind != JsonValueKind.Object)
                {
                    error = "the arguments are not a JSON object";
                    return null;
                }
                return [new ParsedToolCall(tools.NamedFunction!, root.GetRawText())];
            }
            if (root.ValueKind != JsonValueKind.Array || root.GetArrayLength() == 0)
            {
                error = "the output is not a non-empty list of calls";
                return null;
            }
            var calls = new List<ParsedToolCall>();
            foreach (var item in root.EnumerateArray())
            {
                if (item.ValueKind != JsonValueKind.Object || !item.TryGetProperty("name", out var n) || n.ValueKind != JsonValueKind.String
                    || !item.TryGetProperty("parameters", out var p) || p.ValueKind != JsonValueKind.Object)
                {
                    error = "a call is not {\"name\", \"parameters\"}";
                    return null;
                }
                calls.Add(new ParsedToolCall(n.GetString()!, p.GetRawText()));
            }
            return calls;
        }
        catch (JsonException e)
        {
            error = "the output is not JSON: " + e.Message;
            return null;
        }
    }
}
