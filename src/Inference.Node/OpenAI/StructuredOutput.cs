using System.Text.Json;
using Serving.Inference.Constraints;
using Serving.Inference.Decoding;

namespace Serving.Inference.Node.OpenAI;

/// <summary>
/// The request fields that constrain the output: OpenAI's <c>response_format</c> (<c>text</c>, <c>json_object</c>,
/// <c>json_schema</c>) and vLLM's <c>guided_json</c>, <c>guided_regex</c>, <c>guided_choice</c>. At most one may
/// constrain a request; the compiled <see cref="Grammar"/> wraps the request's decoding method
/// (<see cref="ConstrainedSpec"/>). A schema or regex that cannot be enforced is a 400 naming the field, the schema path
/// and the keyword — never silently unconstrained output.
/// </summary>
internal static class StructuredOutput
{
    /// <summary><paramref name="decoding"/> wrapped with the request's constraint, or unchanged when it has none.</summary>
    public static DecodingSpec Apply(GenerationRequestBody body, DecodingSpec decoding)
    {
        var (grammar, _) = Compile(body);
        return grammar is null ? decoding : ConstrainedSpec.Wrap(decoding, grammar);
    }

    private static (Grammar? Grammar, string Param) Compile(GenerationRequestBody body)
    {
        var given = new List<string>();
        if (Present(body.ResponseFormat) && !IsTextFormat(body.ResponseFormat)) given.Add("response_format");
        if (Present(body.GuidedJson)) given.Add("guided_json");
        if (Present(body.GuidedRegex)) given.Add("guided_regex");
        if (Present(body.GuidedChoice)) given.Add("guided_choice");
        if (Present(body.ResponseFormat)) CheckFormatShape(body.ResponseFormat);
        if (given.Count == 0) return (null, "");
        if (given.Count > 1) throw Refusals.Invalid(given[1], $"Only one output constraint per request: got {string.Join(" and ", given)}.");
        var field = given[0];
        try
        {
            return field switch
            {
                "response_format" => (ResponseFormat(body.ResponseFormat), field),
                "guided_json" => (GuidedJson(body.GuidedJson), field),
                "guided_regex" => (body.GuidedRegex.ValueKind == JsonValueKind.String
                    ? Grammar.FromRegex(body.GuidedRegex.GetString()!)
                    : throw Refusals.Invalid(field, "guided_regex must be a string."), field),
                _ => (Grammar.FromChoices(Choices(body.GuidedChoice)), field),
            };
        }
        catch (ConstraintException e)
        {
            var param = field == "response_format" ? "response_format.json_schema.schema" : field;
            var keyword = e.Keyword is null ? "" : $" (keyword '{e.Keyword}')";
            throw Refusals.Invalid(param, $"{e.Message} [schema path {e.Path}{keyword}]");
        }
    }

    private static bool Present(JsonElement e) => e.ValueKind is not (JsonValueKind.Undefined or JsonValueKind.Null);

    private static bool IsTextFormat(JsonElement format) =>
        format.ValueKind == JsonValueKind.Object && format.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String && t.GetString() == "text";

    private static void CheckFormatShape(JsonElement format)
    {
        if (format.ValueKind != JsonValueKind.Object || !format.TryGetProperty("type", out var t) || t.ValueKind != JsonValueKind.String)
        {
            throw Refusals.Invalid("response_format", "response_format must be an object with a type: \"text\", \"json_object\" or \"json_schema\".");
        }
        var type = t.GetString();
        if (type is not ("text" or "json_object" or "json_schema"))
        {
            throw Refusals.Invalid("response_format.type", $"response_format type '{type}' is not supported; use \"text\", \"json_object\" or \"json_schema\".");
        }
    }

    private static Grammar ResponseFormat(JsonElement format)
    {
        var type = format.GetProperty("type").GetString();
        if (type == "json_object") return Grammar.JsonObject();
        if (!format.TryGetProperty("json_schema", out var js) || js.ValueKind != JsonValueKind.Object)
        {
            throw Refusals.Invalid("response_format.json_schema", "response_format of type json_schema needs a json_schema object: {\"name\": ..., \"schema\": {...}, \"strict\": true}.");
        }
        if (js.TryGetProperty("name", out var name) && name.ValueKind != JsonValueKind.String)
        {
            throw Refusals.Invalid("response_format.json_schema.name", "response_format.json_schema.name must be a string.");
        }
        if (js.TryGetProperty("strict", out var strict) && strict.ValueKind is not (JsonValueKind.True or JsonValueKind.False or JsonValueKind.Null))
        {
            throw Refusals.Invalid("response_format.json_schema.strict", "response_format.json_schema.strict must be a boolean.");
        }
        if (!js.TryGetProperty("schema", out var schema) || schema.ValueKind is not (JsonValueKind.Object or JsonValueKind.True))
        {
            throw Refusals.Invalid("response_format.json_schema.schema", "response_format.json_schema.schema must be a JSON Schema object.");
        }
        return Grammar.FromJsonSchema(schema);
    }

    private static Grammar GuidedJson(JsonElement value) => value.ValueKind switch
    {
        JsonValueKind.Object or JsonValueKind.True => Grammar.FromJsonSchema(value),
        JsonValueKind.String => Grammar.FromJsonSchema(value.GetString()!),
        _ => throw Refusals.Invalid("guided_json", "guided_json must be a JSON Schema (an object, or a string holding one)."),
    };

    private static List<string> Choices(JsonElement value)
    {
        if (value.ValueKind != JsonValueKind.Array) throw Refusals.Invalid("guided_choice", "guided_choice must be a list of strings.");
        var list = new List<string>();
        foreach (var item in value.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.String || item.GetString()!.Length == 0) throw Refusals.Invalid("guided_choice", "guided_choice must be a list of non-empty strings.");
            list.Add(item.GetString()!);
        }
        return list;
    }
}
