using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Serving.Inference.Constraints;

/// <summary>
/// A compiled output constraint: a JSON schema, any JSON object (JSON mode), a regular expression or a list of choices,
/// as a byte-level automaton. Immutable and shared: compiled once per distinct source (cached by the SHA-256 of its
/// kind and text) and once per vocabulary for its token masks (<see cref="MasksFor"/>). Compilation errors are
/// <see cref="ConstraintException"/>s naming the path and, when that is the reason, the unsupported keyword.
/// </summary>
public sealed class Grammar
{
    /// <summary>Most compiled grammars kept; the cache is cleared when it grows past this (rare: distinct schemas).</summary>
    public const int CacheLimit = 512;

    private static readonly ConcurrentDictionary<string, Grammar> Cache = new();
    private readonly ConditionalWeakTable<TokenVocabulary, GrammarMasks> _masks = [];

    private Grammar(string kind, string hash, ByteNfa nfa)
    {
        Kind = kind;
        Hash = hash;
        Nfa = nfa;
    }

    /// <summary><c>json_schema</c>, <c>json_object</c>, <c>regex</c> or <c>choice</c>.</summary>
    public string Kind { get; }

    /// <summary>SHA-256 (hex) of the kind and source: the cache key.</summary>
    public string Hash { get; }

    internal ByteNfa Nfa { get; }

    /// <summary>Automaton states (NFA) the grammar compiled to.</summary>
    public int Size => Nfa.Count;

    /// <summary>Output must be JSON valid against <paramref name="schemaJson"/> (a JSON Schema document).</summary>
    public static Grammar FromJsonSchema(string schemaJson) => Cached("json_schema", schemaJson, () =>
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(schemaJson);
        }
        catch (JsonException e)
        {
            throw new ConstraintException("$", null, $"The schema is not valid JSON: {e.Message}");
        }
        using (doc) return JsonSchemaCompiler.Compile(doc.RootElement);
    });

    /// <summary>Output must be JSON valid against <paramref name="schema"/>.</summary>
    public static Grammar FromJsonSchema(JsonElement schema) => FromJsonSchema(schema.GetRawText());

    /// <summary>Output must be one JSON object (OpenAI's JSON mode); nesting is bounded (<see cref="JsonSchemaCompiler.AnyValueDepth"/>).</summary>
    public static Grammar JsonObject() => Cached("json_object", "", () => JsonSchemaCompiler.Compile(JsonDocument.Parse("{\"type\":\"object\"}").RootElement));

    /// <summary>Output must match <paramref name="pattern"/> entirely (vLLM's <c>guided_regex</c>; the ECMAScript subset of <see cref="RegexSyntax"/>).</summary>
    public static Grammar FromRegex(string pattern) => Cached("regex", pattern, () => RegexSyntax.Parse(pattern, RegexSyntax.Context.Raw, "$"));

    /// <summary>Output must be exactly one of <paramref name="choices"/> (vLLM's <c>guided_choice</c>).</summary>
    public static Grammar FromChoices(IReadOnlyList<string> choices)
    {
        if (choices.Count == 0) throw new ConstraintException("$", null, "guided_choice must list at least one choice.");
        return Cached("choice", JsonSerializer.Serialize(choices), () => Rx.Alt(choices.Select(Rx.Literal)));
    }

    /// <summary>The token masks of this grammar over <paramref name="vocabulary"/> (created once, then shared).</summary>
    public GrammarMasks MasksFor(TokenVocabulary vocabulary) => _masks.GetValue(vocabulary, v => new GrammarMasks(this, v));

    private static Grammar Cached(string kind, string source, Func<Rx> compile)
    {
        var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(kind + "\n" + source)));
        if (Cache.TryGetValue(hash, out var g)) return g;
        var nfa = ByteNfa.Compile(compile());
        g = new Grammar(kind, hash, nfa);
        if (Cache.Count >= CacheLimit) Cache.Clear();
        return Cache.GetOrAdd(hash, g);
    }
}
