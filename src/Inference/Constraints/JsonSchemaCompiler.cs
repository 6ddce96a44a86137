using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Serving.Inference.Constraints;

/// <summary>
/// JSON Schema → byte language of the JSON texts valid against it, written compactly (no whitespace between tokens):
/// see <c>docs/structured-output.md</c> for the keywords enforced, how (objects list their declared properties in
/// schema order and nothing else; numbers without exponent, at most 15 digits per part; <c>$ref</c> recursion unrolled
/// <see cref="MaxRecursion"/> levels; free-form values nested at most <see cref="AnyValueDepth"/> levels) and the
/// keywords refused. Every refusal is a <see cref="ConstraintException"/> with the schema path and keyword.
/// </summary>
internal sealed class JsonSchemaCompiler
{
    /// <summary>How deep free-form values (JSON mode, <c>{}</c>, untyped schemas) may nest objects and arrays.</summary>
    public const int AnyValueDepth = 4;

    /// <summary>How many times one <c>$ref</c> may be expanded inside itself (deeper, only its non-recursive alternatives remain).</summary>
    public const int MaxRecursion = 3;

    /// <summary>Most digits of an integer part or a fraction.</summary>
    public const int MaxDigits = 15;

    private static readonly HashSet<string> Annotations =
    [
        "$schema", "$id", "id", "$comment", "title", "description", "default", "examples", "example", "readOnly", "writeOnly",
        "deprecated", "$anchor", "$vocabulary", "contentMediaType", "contentEncoding", "contentSchema", "discriminator",
        "markdownDescription", "errorMessage", "nullable_", "$dynamicAnchor", "$recursiveAnchor",
        "definitions", "$defs", "strict", "name",
    ];

    /// <summary>Keywords that constrain values and that this compiler does not enforce: refused, never ignored.</summary>
    private static readonly HashSet<string> Refused =
    [
        "multipleOf", "not", "if", "then", "else", "dependentRequired", "dependentSchemas", "dependencies", "contains",
        "minContains", "maxContains", "unevaluatedItems", "$dynamicRef", "$recursiveRef",
    ];

    private static readonly string[] ObjectKeywords = ["properties", "required", "additionalProperties", "patternProperties", "minProperties", "maxProperties", "propertyNames", "unevaluatedProperties"];
    private static readonly string[] ArrayKeywords = ["items", "prefixItems", "additionalItems", "minItems", "maxItems", "uniqueItems"];
    private static readonly string[] StringKeywords = ["minLength", "maxLength", "pattern", "format"];
    private static readonly string[] NumberKeywords = ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"];

    private static readonly JsonSerializerOptions Relaxed = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private readonly JsonElement _root;
    private readonly Dictionary<string, int> _refDepth = [];

    private JsonSchemaCompiler(JsonElement root) => _root = root;

    public static Rx Compile(JsonElement schema)
    {
        var rx = new JsonSchemaCompiler(schema).Schema(schema, "$");
        if (rx.IsNothing) throw new ConstraintException("$", null, "No JSON value satisfies the schema (or its recursion has no finite case).");
        return rx;
    }

    private static Rx B(char c) => Rx.Byte((byte)c);

    private static Rx Digits(char lo, char hi) => Rx.Range((byte)lo, (byte)hi);

    private Rx Schema(JsonElement s, string path)
    {
        if (s.ValueKind == JsonValueKind.True) return AnyValue(AnyValueDepth);
        if (s.ValueKind == JsonValueKind.False) return Rx.Nothing;
        if (s.ValueKind != JsonValueKind.Object) throw new ConstraintException(path, null, $"A schema must be an object or a boolean, got {Kind(s)} at {path}.");

        foreach (var p in s.EnumerateObject())
        {
            if (Refused.Contains(p.Name) && !IsTrivial(p)) throw new ConstraintException($"{path}/{p.Name}", p.Name, $"The keyword '{p.Name}' (at {path}) is not supported by constrained decoding.");
        }

        if (s.TryGetProperty("$ref", out var reference)) return Ref(s, reference, path);
        if (s.TryGetProperty("allOf", out var allOf)) return Schema(MergeAll(s, allOf, path), path);
        if (s.TryGetProperty("anyOf", out var anyOf)) return Union(s, anyOf, "anyOf", path);
        if (s.TryGetProperty("oneOf", out var oneOf)) return Union(s, oneOf, "oneOf", path);

        var types = Types(s, path);
        if (s.TryGetProperty("const", out var constant)) return Literals([constant], types, path);
        if (s.TryGetProperty("enum", out var values))
        {
            if (values.ValueKind != JsonValueKind.Array) throw new ConstraintException($"{path}/enum", "enum", $"enum must be an array (at {path}).");
            return Literals([.. values.EnumerateArray()], types, path);
        }
        var alts = new List<Rx>();
        foreach (var t in types) alts.Add(Typed(s, t, path));
        return Rx.Alt(alts);
    }

    private static bool IsTrivial(JsonProperty p) =>
        p.Name is "dependencies" or "dependentRequired" or "dependentSchemas" && p.Value.ValueKind == JsonValueKind.Object && !p.Value.EnumerateObject().Any();

    private static string Kind(JsonElement e) => e.ValueKind.ToString().ToLowerInvariant();

    private List<string> Types(JsonElement s, string path)
    {
        if (s.TryGetProperty("type", out var t))
        {
            var list = new List<string>();
            if (t.ValueKind == JsonValueKind.String) list.Add(t.GetString()!);
            else if (t.ValueKind == JsonValueKind.Array)
            {
                foreach (var x in t.EnumerateArray())
                {
                    if (x.ValueKind != JsonValueKind.String) throw new ConstraintException($"{path}/type", "type", $"type must be a string or an array of strings (at {path}).");
                    list.Add(x.GetString()!);
                }
            }
            else throw new ConstraintException($"{path}/type", "type", $"type must be a string or an array of strings (at {path}).");
            foreach (var name in list)
            {
                if (name is not ("string" or "number" or "integer" or "boolean" or "null" or "object" or "array"))
                {
                    throw new ConstraintException($"{path}/type", "type", $"Unknown type '{name}' at {path}.");
                }
            }
            if (list.Contains("number")) list.Remove("integer");
            return list;
        }
        // No type: the keywords present say which kinds they constrain; other kinds stay free.
        var inferred = new List<string>();
        if (ObjectKeywords.Any(k => s.TryGetProperty(k, out _))) inferred.Add("object");
        if (ArrayKeywords.Any(k => s.TryGetProperty(k, out _))) inferred.Add("array");
        if (StringKeywords.Any(k => s.TryGetProperty(k, out _))) inferred.Add("string");
        if (NumberKeywords.Any(k => s.TryGetProperty(k, out _))) inferred.Add("number");
        return inferred.Count > 0 ? inferred : ["string", "number", "boolean", "null", "object", "array"];
    }

    private Rx Typed(JsonElement s, string type, string path) => type switch
    {
        "string" => StringSchema(s, path),
        "integer" => NumberSchema(s, path, integer: true),
        "number" => NumberSchema(s, path, integer: false),
        "boolean" => Rx.Alt(Rx.Literal("true"), Rx.Literal("false")),
        "null" => Rx.Literal("null"),
        "object" => ObjectSchema(s, path),
        "array" => ArraySchema(s, path),
        _ => Rx.Nothing,
    };

    // ---- literals ----

    private static Rx Literals(List<JsonElement> values, List<string> types, string path)
    {
        var alts = new List<Rx>();
        foreach (var v in values)
        {
            if (!types.Any(t => HasType(v, t))) continue;
            alts.Add(Rx.Literal(Canonical(v)));
        }
        if (alts.Count == 0) throw new ConstraintException(path, "enum", $"No value of enum/const matches the schema's type at {path}.");
        return Rx.Alt(alts);
    }

    private static bool HasType(JsonElement v, string t) => t switch
    {
        "string" => v.ValueKind == JsonValueKind.String,
        "number" => v.ValueKind == JsonValueKind.Number,
        "integer" => v.ValueKind == JsonValueKind.Number && decimal.TryParse(v.GetRawText(), NumberStyles.Float, CultureInfo.InvariantCulture, out var d) && d == decimal.Truncate(d),
        "boolean" => v.ValueKind is JsonValueKind.True or JsonValueKind.False,
        "null" => v.ValueKind == JsonValueKind.Null,
        "object" => v.ValueKind == JsonValueKind.Object,
        "array" => v.ValueKind == JsonValueKind.Array,
        _ => false,
    };

    /// <summary>A JSON value written compactly (non-ASCII kept as UTF-8).</summary>
    internal static byte[] Canonical(JsonElement v)
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping })) v.WriteTo(w);
        return stream.ToArray();
    }

    // ---- references and combinators ----

    private Rx Ref(JsonElement s, JsonElement reference, string path)
    {
        if (reference.ValueKind != JsonValueKind.String) throw new ConstraintException($"{path}/$ref", "$ref", $"$ref must be a string (at {path}).");
        var r = reference.GetString()!;
        var target = Resolve(r, path);
        var depth = _refDepth.GetValueOrDefault(r);
        if (depth >= MaxRecursion) return Rx.Nothing;
        _refDepth[r] = depth + 1;
        try
        {
            var siblings = s.EnumerateObject().Where(p => p.Name != "$ref" && !Annotations.Contains(p.Name)).ToList();
            if (siblings.Count == 0) return Schema(target, $"{path}/$ref");
            // Keywords beside $ref apply too (2019-09 and later): merged like allOf.
            var rest = new JsonObject();
            foreach (var p in siblings) rest[p.Name] = JsonNode.Parse(p.Value.GetRawText());
            var merged = Merge(ToObject(target, path), rest, path);
            return Schema(JsonSerializer.SerializeToElement(merged), path);
        }
        finally
        {
            _refDepth[r] = depth;
        }
    }

    private JsonElement Resolve(string r, string path)
    {
        if (!r.StartsWith('#')) throw new ConstraintException($"{path}/$ref", "$ref", $"Only local references ('#/...') are supported; '{r}' at {path} is not.");
        var current = _root;
        if (r.Length <= 1) return current;
        if (r[1] != '/') throw new ConstraintException($"{path}/$ref", "$ref", $"Anchor references ('{r}' at {path}) are not supported; use a JSON pointer ('#/$defs/name').");
        foreach (var raw in r[2..].Split('/'))
        {
            var token = Uri.UnescapeDataString(raw).Replace("~1", "/").Replace("~0", "~");
            if (current.ValueKind == JsonValueKind.Object && current.TryGetProperty(token, out var next)) current = next;
            else if (current.ValueKind == JsonValueKind.Array && int.TryParse(token, out var i) && i >= 0 && i < current.GetArrayLength()) current = current[i];
            else throw new ConstraintException($"{path}/$ref", "$ref", $"The reference '{r}' at {path} does not resolve inside the schema.");
        }
        return current;
    }

    private Rx Union(JsonElement s, JsonElement branches, string keyword, string path)
    {
        if (branches.ValueKind != JsonValueKind.Array || branches.GetArrayLength() == 0)
        {
            throw new ConstraintException($"{path}/{keyword}", keyword, $"{keyword} must be a non-empty array (at {path}).");
        }
        var siblings = s.EnumerateObject().Where(p => p.Name != keyword && !Annotations.Contains(p.Name)).ToList();
        var list = branches.EnumerateArray().ToList();
        if (keyword == "oneOf" && list.Count > 1 && !Disjoint(list, path)) throw new ConstraintException($"{path}/oneOf", "oneOf",
            $"oneOf at {path} has branches that may overlap (constrained decoding enforces oneOf only when the branches have different types or distinct const/enum values of a required property).");
        var alts = new List<Rx>();
        for (var i = 0; i < list.Count; i++)
        {
            var branch = list[i];
            var branchPath = $"{path}/{keyword}/{i}";
            if (siblings.Count == 0)
            {
                alts.Add(Schema(branch, branchPath));
                continue;
            }
            var rest = new JsonObject();
            foreach (var p in siblings) rest[p.Name] = JsonNode.Parse(p.Value.GetRawText());
            alts.Add(Schema(JsonSerializer.SerializeToElement(Merge(ToObject(branch, branchPath), rest, branchPath)), branchPath));
        }
        return Rx.Alt(alts);
    }

    /// <summary>Whether no value can match two branches: different declared types, or a required property with distinct const/enum values.</summary>
    private bool Disjoint(List<JsonElement> branches, string path)
    {
        var typeSets = new List<HashSet<string>?>();
        foreach (var b in branches)
        {
            var target = b;
            if (b.ValueKind == JsonValueKind.Object && b.TryGetProperty("$ref", out var r) && r.ValueKind == JsonValueKind.String) target = Resolve(r.GetString()!, path);
            if (target.ValueKind == JsonValueKind.Object && target.TryGetProperty("type", out var t))
            {
                var set = new HashSet<string>();
                if (t.ValueKind == JsonValueKind.String) set.Add(t.GetString()!);
                else if (t.ValueKind == JsonValueKind.Array) foreach (var x in t.EnumerateArray()) set.Add(x.GetString() ?? "");
                if (set.Contains("number")) set.Add("integer");
                if (set.Contains("integer")) set.Add("number");
                typeSets.Add(set);
            }
            else typeSets.Add(null);
        }
        var disjointTypes = true;
        for (var i = 0; i < typeSets.Count && disjointTypes; i++)
        {
            for (var j = i + 1; j < typeSets.Count; j++)
            {
                if (typeSets[i] is null || typeSets[j] is null || typeSets[i]!.Overlaps(typeSets[j]!)) { disjointTypes = false; break; }
            }
        }
        if (disjointTypes) return true;
        // Discriminator: a property required in every branch whose const/enum values never repeat across branches.
        var resolved = branches.Select(b => b.ValueKind == JsonValueKind.Object && b.TryGetProperty("$ref", out var r) && r.ValueKind == JsonValueKind.String ? Resolve(r.GetString()!, path) : b).ToList();
        if (resolved.Any(b => b.ValueKind != JsonValueKind.Object || !b.TryGetProperty("properties", out _))) return false;
        foreach (var candidate in resolved[0].GetProperty("properties").EnumerateObject())
        {
            var seen = new HashSet<string>();
            var ok = true;
            foreach (var b in resolved)
            {
                if (!Requires(b, candidate.Name) || !b.GetProperty("properties").TryGetProperty(candidate.Name, out var ps) || ps.ValueKind != JsonValueKind.Object) { ok = false; break; }
                IEnumerable<JsonElement> vals = ps.TryGetProperty("const", out var c) ? [c] : ps.TryGetProperty("enum", out var e) && e.ValueKind == JsonValueKind.Array ? e.EnumerateArray() : [];
                var any = false;
                foreach (var v in vals)
                {
                    any = true;
                    if (!seen.Add(Encoding.UTF8.GetString(Canonical(v)))) { ok = false; break; }
                }
                if (!any || !ok) { ok = false; break; }
            }
            if (ok) return true;
        }
        return false;
    }

    private static bool Requires(JsonElement s, string name) =>
        s.TryGetProperty("required", out var r) && r.ValueKind == JsonValueKind.Array && r.EnumerateArray().Any(x => x.ValueKind == JsonValueKind.String && x.GetString() == name);

    private JsonElement MergeAll(JsonElement s, JsonElement allOf, string path)
    {
        if (allOf.ValueKind != JsonValueKind.Array) throw new ConstraintException($"{path}/allOf", "allOf", $"allOf must be an array (at {path}).");
        var merged = new JsonObject();
        foreach (var p in s.EnumerateObject()) if (p.Name != "allOf") merged[p.Name] = JsonNode.Parse(p.Value.GetRawText());
        var i = 0;
        foreach (var part in allOf.EnumerateArray())
        {
            var partPath = $"{path}/allOf/{i++}";
            var target = part;
            var guard = 0;
            while (target.ValueKind == JsonValueKind.Object && target.TryGetProperty("$ref", out var r) && r.ValueKind == JsonValueKind.String
                   && target.EnumerateObject().All(p => p.Name == "$ref" || Annotations.Contains(p.Name)) && guard++ < 16)
            {
                target = Resolve(r.GetString()!, partPath);
            }
            merged = Merge(merged, ToObject(target, partPath), partPath);
        }
        return JsonSerializer.SerializeToElement(merged);
    }

    private static JsonObject ToObject(JsonElement s, string path)
    {
        if (s.ValueKind == JsonValueKind.True) return [];
        if (s.ValueKind != JsonValueKind.Object) throw new ConstraintException(path, null, $"A schema must be an object (at {path}).");
        return JsonNode.Parse(s.GetRawText())!.AsObject();
    }

    /// <summary>
    /// The conjunction of two schemas when it can be written as one: disjoint keywords side by side, <c>properties</c>
    /// joined (a property in both is merged recursively), <c>required</c> united, equal values kept; otherwise refused.
    /// </summary>
    private static JsonObject Merge(JsonObject a, JsonObject b, string path)
    {
        var result = (JsonObject)a.DeepClone();
        foreach (var (key, value) in b)
        {
            if (Annotations.Contains(key) && key is not ("definitions" or "$defs")) continue;
            if (!result.TryGetPropertyValue(key, out var existing) || existing is null)
            {
                result[key] = value?.DeepClone();
                continue;
            }
            if (JsonNode.DeepEquals(existing, value)) continue;
            switch (key)
            {
                case "properties" or "$defs" or "definitions" when existing is JsonObject ea && value is JsonObject eb:
                    var props = (JsonObject)ea.DeepClone();
                    foreach (var (name, schema) in eb)
                    {
                        if (props.TryGetPropertyValue(name, out var prior) && prior is JsonObject po && schema is JsonObject so) props[name] = Merge(po, so, $"{path}/properties/{name}");
                        else if (props.ContainsKey(name) && !JsonNode.DeepEquals(props[name], schema)) throw new ConstraintException($"{path}/properties/{name}", "allOf", $"Cannot combine two definitions of property '{name}' (at {path}).");
                        else props[name] = schema?.DeepClone();
                    }
                    result[key] = props;
                    break;
                case "required" when existing is JsonArray ra && value is JsonArray rb:
                    var names = ra.Select(n => n?.GetValue<string>()).Concat(rb.Select(n => n?.GetValue<string>())).Distinct().ToArray();
                    result[key] = new JsonArray([.. names.Select(n => (JsonNode?)JsonValue.Create(n))]);
                    break;
                case "additionalProperties" or "unevaluatedProperties":
                    result[key] = false;
                    break;
                case "type":
                    var ta = TypeNames(existing);
                    var tb = TypeNames(value);
                    var both = ta.Intersect(tb).ToList();
                    if (ta.Contains("number") && tb.Contains("integer") || tb.Contains("number") && ta.Contains("integer")) both.Add("integer");
                    if (both.Count == 0) throw new ConstraintException($"{path}/type", "allOf", $"allOf at {path} combines types that exclude each other.");
                    result[key] = new JsonArray([.. both.Distinct().Select(n => (JsonNode?)JsonValue.Create(n))]);
                    break;
                case "minimum" or "minLength" or "minItems" or "minProperties" or "exclusiveMinimum" when IsNumber(existing) && IsNumber(value):
                    result[key] = Math.Max(existing.GetValue<double>(), value!.GetValue<double>());
                    break;
                case "maximum" or "maxLength" or "maxItems" or "maxProperties" or "exclusiveMaximum" when IsNumber(existing) && IsNumber(value):
                    result[key] = Math.Min(existing.GetValue<double>(), value!.GetValue<double>());
                    break;
                default:
                    throw new ConstraintException($"{path}/{key}", key, $"Cannot combine two different '{key}' constraints (allOf/$ref siblings at {path}).");
            }
        }
        return result;
    }

    private static bool IsNumber(JsonNode? n) => n is JsonValue v && v.GetValueKind() == JsonValueKind.Number;

    private static List<string> TypeNames(JsonNode? n) => n switch
    {
        JsonValue v when v.GetValueKind() == JsonValueKind.String => [v.GetValue<string>()],
        JsonArray a => [.. a.Select(x => x!.GetValue<string>())],
        _ => [],
    };

    // ---- strings ----

    private static readonly Rx JsonChar = Rx.Alt(
        Utf8Ranges.Encode(CodePointSet.Of((0x20, 0x10FFFF)).Minus(CodePointSet.Of(('"', '"'), ('\\', '\\')))),
        Rx.Seq(B('\\'), Rx.Alt(B('"'), B('\\'), B('/'), B('b'), B('f'), B('n'), B('r'), B('t'))));

    // Strings with a length bound: characters that are one "character" under every counting rule (code points, UTF-16
    // units, text elements): printable ASCII, and \" \\ escapes.
    private static readonly Rx CountedChar = Rx.Alt(
        Utf8Ranges.Encode(CodePointSet.Of((0x20, 0x7E)).Minus(CodePointSet.Of(('"', '"'), ('\\', '\\')))),
        Rx.Literal("\\\""), Rx.Literal("\\\\"));

    internal static readonly Rx AnyString = Rx.Seq(B('"'), Rx.Star(JsonChar), B('"'));

    private Rx StringSchema(JsonElement s, string path)
    {
        var min = Count(s, "minLength", path) ?? 0;
        var max = Count(s, "maxLength", path);
        var hasPattern = s.TryGetProperty("pattern", out var pattern);
        var hasFormat = s.TryGetProperty("format", out var format);
        if (hasPattern && hasFormat) throw new ConstraintException($"{path}/pattern", "pattern", $"pattern together with format (at {path}) is not supported.");
        if ((hasPattern || hasFormat) && (min > 0 || max is not null))
        {
            throw new ConstraintException($"{path}/{(min > 0 ? "minLength" : "maxLength")}", min > 0 ? "minLength" : "maxLength",
                $"minLength/maxLength together with {(hasPattern ? "pattern" : "format")} (at {path}) is not supported.");
        }
        if (hasPattern)
        {
            if (pattern.ValueKind != JsonValueKind.String) throw new ConstraintException($"{path}/pattern", "pattern", $"pattern must be a string (at {path}).");
            var body = RegexSyntax.Parse(pattern.GetString()!, RegexSyntax.Context.JsonString, $"{path}/pattern");
            if (body.IsNothing) throw new ConstraintException($"{path}/pattern", "pattern", $"The pattern at {path} cannot match any string.");
            return Rx.Seq(B('"'), body, B('"'));
        }
        if (hasFormat)
        {
            var name = format.GetString();
            var body = name switch
            {
                "date" => Date,
                "time" => Time,
                "date-time" => Rx.Seq(Date, B('T'), Time),
                "email" => Email,
                "uuid" => Uuid,
                "ipv4" => Ipv4,
                _ => throw new ConstraintException($"{path}/format", "format", $"format '{name}' (at {path}) is not supported; supported formats: date, time, date-time, email, uuid, ipv4."),
            };
            return Rx.Seq(B('"'), body, B('"'));
        }
        if (max is int m && m < min) return Rx.Nothing;
        if (min == 0 && max is null) return AnyString;
        if ((max ?? min) > 10_000) throw new ConstraintException($"{path}/maxLength", "maxLength", $"Length bounds above 10000 (at {path}) are not supported.");
        return Rx.Seq(B('"'), Rx.Repeat(CountedChar, min, max), B('"'));
    }

    private static int? Count(JsonElement s, string keyword, string path)
    {
        if (!s.TryGetProperty(keyword, out var v)) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out var d) || d < 0 || d != Math.Floor(d))
        {
            throw new ConstraintException($"{path}/{keyword}", keyword, $"{keyword} must be a non-negative integer (at {path}).");
        }
        return d > int.MaxValue ? int.MaxValue : (int)d;
    }

    private static Rx Seq(params Rx[] parts) => Rx.Seq(parts);

    private static Rx D => Digits('0', '9');

    private static Rx Lit(string s) => Rx.Literal(s);

    // Years 1000-9999; days valid in every year (February up to 28).
    private static readonly Rx Date = Seq(Digits('1', '9'), D, D, D, B('-'), Rx.Alt(
        Seq(Rx.Alt(Lit("01"), Lit("03"), Lit("05"), Lit("07"), Lit("08"), Lit("10"), Lit("12")), B('-'), Rx.Alt(Seq(B('0'), Digits('1', '9')), Seq(Digits('1', '2'), D), Lit("30"), Lit("31"))),
        Seq(Rx.Alt(Lit("04"), Lit("06"), Lit("09"), Lit("11")), B('-'), Rx.Alt(Seq(B('0'), Digits('1', '9')), Seq(Digits('1', '2'), D), Lit("30"))),
        Seq(Lit("02"), B('-'), Rx.Alt(Seq(B('0'), Digits('1', '9')), Seq(B('1'), D), Seq(B('2'), Digits('0', '8'))))));

    private static readonly Rx Time = Seq(Rx.Alt(Seq(Digits('0', '1'), D), Seq(B('2'), Digits('0', '3'))), B(':'), Digits('0', '5'), D, B(':'), Digits('0', '5'), D,
        Rx.Optional(Seq(B('.'), Rx.Repeat(D, 1, 3))),
        Rx.Alt(B('Z'), Seq(Rx.Alt(B('+'), B('-')), Rx.Alt(Seq(Digits('0', '1'), D), Seq(B('2'), Digits('0', '3'))), B(':'), Digits('0', '5'), D)));

    private static readonly Rx Alnum = Rx.Alt(Digits('a', 'z'), Digits('A', 'Z'), D);

    private static readonly Rx Label = Rx.Repeat(Alnum, 1, 20);

    private static readonly Rx Email = Seq(Label, Rx.Repeat(Seq(B('.'), Label), 0, 2), B('@'), Label, Rx.Repeat(Seq(B('.'), Label), 0, 2), B('.'), Rx.Repeat(Rx.Alt(Digits('a', 'z'), Digits('A', 'Z')), 2, 6));

    private static readonly Rx Hex = Rx.Alt(D, Digits('a', 'f'), Digits('A', 'F'));

    private static readonly Rx Uuid = Seq(Rx.Repeat(Hex, 8, 8), B('-'), Rx.Repeat(Hex, 4, 4), B('-'), Rx.Repeat(Hex, 4, 4), B('-'), Rx.Repeat(Hex, 4, 4), B('-'), Rx.Repeat(Hex, 12, 12));

    private static readonly Rx Octet = Rx.Alt(Seq(Lit("25"), Digits('0', '5')), Seq(B('2'), Digits('0', '4'), D), Seq(B('1'), D, D), Seq(Digits('1', '9'), D), D);

    private static readonly Rx Ipv4 = Seq(Octet, B('.'), Octet, B('.'), Octet, B('.'), Octet);

    // ---- numbers ----

    private static readonly long Limit = (long)Math.Pow(10, MaxDigits) - 1;

    private static readonly Rx Fraction = Rx.Optional(Seq(B('.'), Rx.Repeat(D, 1, MaxDigits)));

    private static readonly Rx NonzeroFraction = Seq(B('.'), Rx.Repeat(D, 0, 7), Digits('1', '9'), Rx.Repeat(D, 0, 7));

    private static readonly Rx ZeroFraction = Rx.Optional(Seq(B('.'), Rx.Repeat(B('0'), 1, 3)));

    private static readonly Rx AnyInteger = Seq(Rx.Optional(B('-')), Rx.Alt(B('0'), Seq(Digits('1', '9'), Rx.Repeat(D, 0, MaxDigits - 1))));

    private Rx NumberSchema(JsonElement s, string path, bool integer)
    {
        var lo = Bound(s, "minimum", path);
        var hi = Bound(s, "maximum", path);
        var loExclusive = false;
        var hiExclusive = false;
        if (s.TryGetProperty("exclusiveMinimum", out var xmin))
        {
            if (xmin.ValueKind == JsonValueKind.True) loExclusive = true;
            else if (xmin.ValueKind == JsonValueKind.Number)
            {
                var v = xmin.GetDouble();
                if (lo is null || v >= lo) { lo = v; loExclusive = true; }
            }
        }
        if (s.TryGetProperty("exclusiveMaximum", out var xmax))
        {
            if (xmax.ValueKind == JsonValueKind.True) hiExclusive = true;
            else if (xmax.ValueKind == JsonValueKind.Number)
            {
                var v = xmax.GetDouble();
                if (hi is null || v <= hi) { hi = v; hiExclusive = true; }
            }
        }
        if (lo is null && hi is null) return integer ? AnyInteger : Seq(AnyInteger, Fraction);
        if (integer)
        {
            long a = lo is double l ? (long)Math.Clamp(loExclusive ? Math.Floor(l) + 1 : Math.Ceiling(l), -Limit, Limit + 1) : -Limit;
            long b = hi is double h ? (long)Math.Clamp(hiExclusive ? Math.Ceiling(h) - 1 : Math.Floor(h), -Limit - 1, Limit) : Limit;
            if (a > b) throw new ConstraintException(path, "minimum", $"No integer satisfies the bounds at {path}.");
            return IntRange(a, b);
        }
        foreach (var (bound, name) in new[] { (lo, "minimum"), (hi, "maximum") })
        {
            if (bound is double d && (d != Math.Floor(d) || Math.Abs(d) > Limit))
            {
                throw new ConstraintException($"{path}/{name}", name, $"{name} {d.ToString(CultureInfo.InvariantCulture)} on a number (at {path}) is not supported: only integer bounds (|bound| < 1e15) are enforced exactly.");
            }
        }
        var rx = NumberRange((long?)lo, loExclusive, (long?)hi, hiExclusive);
        if (rx.IsNothing) throw new ConstraintException(path, "minimum", $"No number satisfies the bounds at {path}.");
        return rx;
    }

    private static double? Bound(JsonElement s, string keyword, string path)
    {
        if (!s.TryGetProperty(keyword, out var v)) return null;
        if (v.ValueKind != JsonValueKind.Number) throw new ConstraintException($"{path}/{keyword}", keyword, $"{keyword} must be a number (at {path}).");
        return v.GetDouble();
    }

    /// <summary>Integers a..b (|a|, |b| ≤ 1e15 − 1) written without leading zeros.</summary>
    internal static Rx IntRange(long a, long b)
    {
        var alts = new List<Rx>();
        if (a < 0)
        {
            var mLo = b < 0 ? -b : 1;
            alts.Add(Seq(B('-'), NonNegative(mLo, -a)));
        }
        if (b >= 0) alts.Add(NonNegative(Math.Max(a, 0), b));
        return Rx.Alt(alts);
    }

    private static Rx NonNegative(long a, long b)
    {
        if (a > b) return Rx.Nothing;
        var alts = new List<Rx>();
        var la = a.ToString(CultureInfo.InvariantCulture).Length;
        var lb = b.ToString(CultureInfo.InvariantCulture).Length;
        for (var len = la; len <= lb; len++)
        {
            var lo = len == la ? a : (long)Math.Pow(10, len - 1);
            var hi = len == lb ? b : (long)Math.Pow(10, len) - 1;
            alts.Add(DigitsBetween(lo.ToString(CultureInfo.InvariantCulture), hi.ToString(CultureInfo.InvariantCulture), 0));
        }
        return Rx.Alt(alts);
    }

    private static Rx DigitsBetween(string lo, string hi, int i)
    {
        var n = lo.Length;
        if (i == n - 1) return Digits(lo[i], hi[i]);
        if (lo[i] == hi[i]) return Seq(B(lo[i]), DigitsBetween(lo, hi, i + 1));
        var loMin = lo.AsSpan(i + 1).IndexOfAnyExcept('0') < 0;
        var hiMax = hi.AsSpan(i + 1).IndexOfAnyExcept('9') < 0;
        var alts = new List<Rx>();
        if (!loMin) alts.Add(Seq(B(lo[i]), DigitsBetween(lo, lo[..(i + 1)] + new string('9', n - i - 1), i + 1)));
        var first = loMin ? lo[i] : (char)(lo[i] + 1);
        var last = hiMax ? hi[i] : (char)(hi[i] - 1);
        if (first <= last) alts.Add(Seq(Digits(first, last), Rx.Repeat(D, n - i - 1, n - i - 1)));
        if (!hiMax) alts.Add(Seq(B(hi[i]), DigitsBetween(hi[..(i + 1)] + new string('0', n - i - 1), hi, i + 1)));
        return Rx.Alt(alts);
    }

    /// <summary>Decimals (no exponent) v with lo (&lt;|≤) v (&lt;|≤) hi for integer bounds.</summary>
    private static Rx NumberRange(long? lo, bool loExclusive, long? hi, bool hiExclusive)
    {
        var alts = new List<Rx>();
        // v ≥ 0
        if (!(hi is long h0 && (h0 < 0 || (h0 == 0 && hiExclusive))))
        {
            var L = lo is long l && l >= 0 ? l : 0;
            var lx = lo is long l2 && l2 >= 0 && loExclusive;
            alts.Add(Magnitudes(L, lx, hi, hiExclusive));
        }
        // v < 0, written as '-' and its magnitude m > 0
        if (!(lo is long l0 && l0 >= 0))
        {
            var mLo = hi is long h && h < 0 ? -h : 0;
            var mLoExclusive = hi is long h2 && h2 < 0 ? hiExclusive : true;
            alts.Add(Seq(B('-'), Magnitudes(mLo, mLoExclusive, lo is long l3 ? -l3 : null, loExclusive)));
        }
        return Rx.Alt(alts);
    }

    private static Rx Magnitudes(long lo, bool loExclusive, long? hi, bool hiExclusive)
    {
        var alts = new List<Rx>();
        var kLo = loExclusive ? lo + 1 : lo;
        var kHi = hi is long h ? h - 1 : Limit;
        if (kLo <= kHi) alts.Add(Seq(NonNegative(kLo, Math.Min(kHi, Limit)), Fraction));
        if (loExclusive && (hi is null || lo < hi)) alts.Add(Seq(NonNegative(lo, lo), NonzeroFraction));
        if (hi is long h2 && !hiExclusive && (h2 > lo || (h2 == lo && !loExclusive))) alts.Add(Seq(NonNegative(h2, h2), ZeroFraction));
        return Rx.Alt(alts);
    }

    // ---- objects and arrays ----

    private Rx ObjectSchema(JsonElement s, string path)
    {
        var names = new List<string>();
        var schemas = new List<JsonElement?>();
        if (s.TryGetProperty("properties", out var props))
        {
            if (props.ValueKind != JsonValueKind.Object) throw new ConstraintException($"{path}/properties", "properties", $"properties must be an object (at {path}).");
            foreach (var p in props.EnumerateObject())
            {
                names.Add(p.Name);
                schemas.Add(p.Value);
            }
        }
        var required = new HashSet<string>();
        if (s.TryGetProperty("required", out var req))
        {
            if (req.ValueKind != JsonValueKind.Array) throw new ConstraintException($"{path}/required", "required", $"required must be an array of property names (at {path}).");
            foreach (var r in req.EnumerateArray())
            {
                if (r.ValueKind != JsonValueKind.String) throw new ConstraintException($"{path}/required", "required", $"required must be an array of property names (at {path}).");
                var name = r.GetString()!;
                required.Add(name);
                if (!names.Contains(name))
                {
                    names.Add(name);
                    schemas.Add(null);
                }
            }
        }
        if (s.TryGetProperty("patternProperties", out var pp) && pp.ValueKind == JsonValueKind.Object)
        {
            foreach (var pattern in pp.EnumerateObject())
            {
                System.Text.RegularExpressions.Regex regex;
                try
                {
                    regex = new System.Text.RegularExpressions.Regex(pattern.Name, System.Text.RegularExpressions.RegexOptions.None, TimeSpan.FromSeconds(1));
                }
                catch (ArgumentException)
                {
                    throw new ConstraintException($"{path}/patternProperties", "patternProperties", $"patternProperties '{pattern.Name}' at {path} is not a valid regular expression.");
                }
                var hit = names.FirstOrDefault(n => regex.IsMatch(n));
                if (hit is not null) throw new ConstraintException($"{path}/patternProperties", "patternProperties", $"patternProperties at {path} applies to the declared property '{hit}': not supported.");
            }
        }
        if (s.TryGetProperty("propertyNames", out var pn) && pn.ValueKind != JsonValueKind.True && !(pn.ValueKind == JsonValueKind.Object && !pn.EnumerateObject().Any()))
        {
            if (names.Count > 0) throw new ConstraintException($"{path}/propertyNames", "propertyNames", $"propertyNames with declared properties (at {path}) is not supported.");
        }
        var members = new List<Rx>();
        var isRequired = new List<bool>();
        var free = names.Count == 0 && s.TryGetProperty("additionalProperties", out var ap) is var hasAp && !(hasAp && ap.ValueKind == JsonValueKind.False)
            && !(s.TryGetProperty("unevaluatedProperties", out var up) && up.ValueKind == JsonValueKind.False)
            && !(hasAp && ap.ValueKind == JsonValueKind.Object && ap.EnumerateObject().Any());
        for (var i = 0; i < names.Count; i++)
        {
            var value = schemas[i] is JsonElement e ? Schema(e, $"{path}/properties/{names[i]}") : AnyValue(AnyValueDepth - 1);
            var r = required.Contains(names[i]);
            if (value.IsNothing)
            {
                if (r) return Rx.Nothing;
                continue;
            }
            members.Add(Seq(Rx.Literal(JsonSerializer.SerializeToUtf8Bytes(names[i], Relaxed)), B(':'), value));
            isRequired.Add(r);
        }
        var minProps = Count(s, "minProperties", path) ?? 0;
        var maxProps = Count(s, "maxProperties", path);
        if (free && minProps == 0 && maxProps is null)
        {
            // No declared properties and nothing forbids others: any object (free-form, bounded nesting).
            return AnyObject(AnyValueDepth - 1);
        }
        if (minProps > isRequired.Count(x => x))
        {
            if (minProps > members.Count) throw new ConstraintException($"{path}/minProperties", "minProperties", $"minProperties {minProps} at {path} exceeds the declared properties: not supported.");
            for (var i = 0; i < isRequired.Count && isRequired.Count(x => x) < minProps; i++) isRequired[i] = true;
        }
        if (maxProps is int mp && mp < members.Count)
        {
            if (isRequired.Count(x => x) > mp) return Rx.Nothing;
            throw new ConstraintException($"{path}/maxProperties", "maxProperties", $"maxProperties {mp} below the number of declared properties at {path} is not supported.");
        }
        return Seq(B('{'), new MembersRx([.. members], [.. isRequired]), B('}'));
    }

    private Rx ArraySchema(JsonElement s, string path)
    {
        var min = Count(s, "minItems", path) ?? 0;
        var max = Count(s, "maxItems", path);
        if (max is int mx && mx < min) return Rx.Nothing;
        if (max > 1000 || min > 1000) throw new ConstraintException($"{path}/maxItems", "maxItems", $"Item counts above 1000 (at {path}) are not supported.");
        if (s.TryGetProperty("uniqueItems", out var unique) && unique.ValueKind == JsonValueKind.True && (max ?? 2) > 1)
        {
            throw new ConstraintException($"{path}/uniqueItems", "uniqueItems", $"uniqueItems (at {path}) is not supported by constrained decoding.");
        }
        var tuple = new List<Rx>();
        JsonElement? rest = null;
        var hasRest = true;
        if (s.TryGetProperty("prefixItems", out var prefix))
        {
            foreach (var (item, i) in prefix.EnumerateArray().Select((x, i) => (x, i))) tuple.Add(Schema(item, $"{path}/prefixItems/{i}"));
            if (s.TryGetProperty("items", out var items)) rest = items;
        }
        else if (s.TryGetProperty("items", out var items))
        {
            if (items.ValueKind == JsonValueKind.Array)
            {
                foreach (var (item, i) in items.EnumerateArray().Select((x, i) => (x, i))) tuple.Add(Schema(item, $"{path}/items/{i}"));
                if (s.TryGetProperty("additionalItems", out var additional)) rest = additional;
            }
            else rest = items;
        }
        if (rest is JsonElement r && r.ValueKind == JsonValueKind.False) hasRest = false;
        var restRx = !hasRest ? Rx.Nothing : rest is JsonElement re ? Schema(re, $"{path}/items") : AnyValue(AnyValueDepth - 1);
        if (tuple.Count == 0)
        {
            if (restRx.IsNothing) return min == 0 ? Lit("[]") : Rx.Nothing;
            return Seq(B('['), new ListRx(restRx, (byte)',', min, max), B(']'));
        }
        // Tuple items first (each needed up to minItems), then further items of the rest schema.
        Rx Tail(int i)
        {
            if (max is int m && i >= m) return Rx.Empty;
            if (i < tuple.Count)
            {
                var next = Seq(B(','), tuple[i], Tail(i + 1));
                return i >= min ? Rx.Optional(next) : next;
            }
            return Rx.Repeat(Seq(B(','), restRx), Math.Max(0, min - i), max is int m2 ? m2 - i : null);
        }
        var first = Seq(tuple[0], Tail(1));
        var body = Seq(B('['), first, B(']'));
        return min == 0 ? Rx.Alt(Lit("[]"), body) : body;
    }

    // ---- free-form values ----

    private static readonly Rx[] AnyCache = new Rx[AnyValueDepth + 1];
    private static readonly Rx[] AnyObjectCache = new Rx[AnyValueDepth + 1];

    private static readonly Rx Scalar = Rx.Alt(AnyString, Seq(AnyInteger, Fraction), Lit("true"), Lit("false"), Lit("null"));

    /// <summary>Any JSON value whose objects and arrays nest at most <paramref name="depth"/> levels.</summary>
    internal static Rx AnyValue(int depth)
    {
        if (depth <= 0) return Scalar;
        return AnyCache[depth] ??= Rx.Alt(Scalar, AnyObject(depth - 1), Seq(B('['), new ListRx(AnyValue(depth - 1), (byte)',', 0, null), B(']')));
    }

    internal static Rx AnyObject(int depth) =>
        AnyObjectCache[Math.Max(depth, 0)] ??= Seq(B('{'), new ListRx(Seq(AnyString, B(':'), AnyValue(depth)), (byte)',', 0, null), B('}'));
}
