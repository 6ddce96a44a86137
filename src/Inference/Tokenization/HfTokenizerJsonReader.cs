using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Serving.Inference.Tokenization;

/// <summary>
/// Reads a Hugging Face <c>tokenizer.json</c> whose model is BPE: byte-level (GPT-2, Llama 3, Qwen) or
/// SentencePiece-style (Llama 2, Mistral: ▁ normaliser, byte fallback). Other model types are a format error.
/// </summary>
internal static class HfTokenizerJsonReader
{
    public static BpeTokenizer Read(string path, TokenizerConfig config)
    {
        using var doc = JsonUtil.Parse(path);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object) throw new TokenizerFormatException(path, "top level must be a JSON object");
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            throw new TokenizerFormatException(path, "has no 'model' object");

        string type = JsonUtil.OptionalString(model, "type") ?? (model.TryGetProperty("merges", out _) ? "BPE" : "(missing)");
        if (type != "BPE")
            throw new TokenizerFormatException(path, $"model type '{type}' is not supported (only BPE)");

        // Vocabulary.
        if (!model.TryGetProperty("vocab", out var vocabJson) || vocabJson.ValueKind != JsonValueKind.Object)
            throw new TokenizerFormatException(path, "model.vocab must be an object of token → id");
        var vocab = new Dictionary<string, int>(vocabJson.GetPropertyCount(), StringComparer.Ordinal);
        foreach (var entry in vocabJson.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.Number || !entry.Value.TryGetInt32(out int id) || id < 0)
                throw new TokenizerFormatException(path, $"model.vocab id of '{entry.Name}' is not a non-negative integer");
            vocab[entry.Name] = id;
        }

        // Merges: "a b" strings or ["a", "b"] pairs.
        var merges = new List<(string, string)>();
        if (model.TryGetProperty("merges", out var mergesJson) && mergesJson.ValueKind != JsonValueKind.Null)
        {
            if (mergesJson.ValueKind != JsonValueKind.Array) throw new TokenizerFormatException(path, "model.merges must be an array");
            int index = 0;
            foreach (var m in mergesJson.EnumerateArray())
            {
                if (m.ValueKind == JsonValueKind.String)
                {
                    if (!BpeMerges.TryParseLine(m.GetString()!, out var pair))
                        throw new TokenizerFormatException(path, $"model.merges[{index}] '{m.GetString()}' is not two tokens separated by one space");
                    merges.Add(pair);
                }
                else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2
                    && m[0].ValueKind == JsonValueKind.String && m[1].ValueKind == JsonValueKind.String)
                {
                    merges.Add((m[0].GetString()!, m[1].GetString()!));
                }
                else
                {
                    throw new TokenizerFormatException(path, $"model.merges[{index}] must be \"a b\" or [\"a\", \"b\"]");
                }
                index++;
            }
        }

        string? prefix = JsonUtil.OptionalString(model, "continuing_subword_prefix");
        string? suffix = JsonUtil.OptionalString(model, "end_of_word_suffix");
        if (JsonUtil.Property(model, "dropout") is { ValueKind: JsonValueKind.Number } dropout && dropout.GetDouble() > 0)
            throw new TokenizerFormatException(path, "BPE dropout is not supported (inference needs deterministic encoding)");

        // Added tokens share the id space; they may or may not also be in model.vocab.
        var added = new List<AddedToken>();
        var addedJson = JsonUtil.Property(root, "added_tokens");
        if (addedJson.ValueKind == JsonValueKind.Array)
        {
            int index = 0;
            foreach (var t in addedJson.EnumerateArray())
            {
                string content = JsonUtil.OptionalString(t, "content")
                    ?? throw new TokenizerFormatException(path, $"added_tokens[{index}] has no string 'content'");
                if (!t.TryGetProperty("id", out var idJson) || idJson.ValueKind != JsonValueKind.Number || !idJson.TryGetInt32(out int id) || id < 0)
                    throw new TokenizerFormatException(path, $"added_tokens[{index}] ('{content}') has no non-negative integer 'id'");
                added.Add(new AddedToken(content, id, JsonUtil.OptionalBool(t, "special", false),
                    JsonUtil.OptionalBool(t, "lstrip", false), JsonUtil.OptionalBool(t, "rstrip", false)));
                index++;
            }
        }
        else if (addedJson.ValueKind != JsonValueKind.Undefined && addedJson.ValueKind != JsonValueKind.Null)
        {
            throw new TokenizerFormatException(path, "added_tokens must be an array");
        }
        // Tokens only tokenizer_config.json knows about (older exports).
        foreach (var t in config.AddedTokens)
            if (!added.Exists(a => a.Id == t.Id)) added.Add(t);

        string? unk = JsonUtil.OptionalString(model, "unk_token");
        int? unkId = null;
        if (unk is not null)
        {
            if (vocab.TryGetValue(unk, out int u)) unkId = u;
            else if (added.Find(a => a.Content == unk) is { } au) unkId = au.Id;
            else throw new TokenizerFormatException(path, $"model.unk_token '{unk}' is not in the vocabulary");
        }

        var bpe = new BpeModel(
            vocab,
            BpeMerges.Build(merges, vocab, prefix, path),
            unkId,
            JsonUtil.OptionalBool(model, "fuse_unk", false),
            JsonUtil.OptionalBool(model, "byte_fallback", false),
            JsonUtil.OptionalBool(model, "ignore_merges", false),
            prefix,
            suffix);

        var normalizer = TextNormalizer.FromJson(JsonUtil.Property(root, "normalizer"), path);
        var preTokenizer = PreTokenizer.FromJson(JsonUtil.Property(root, "pre_tokenizer"), path);
        var decoder = DecoderSpec.FromJson(JsonUtil.Property(root, "decoder"), path, preTokenizer?.IsByteLevel ?? false);

        var (tokens, special) = TokenTable.Build(vocab, added, new HashSet<string>(config.DeclaredSpecialTokens(), StringComparer.Ordinal));
        int vocabSize = tokens.Length;
        var table = decoder.BuildTable(tokens, special);

        int? Lookup(string s) => added.Find(a => a.Content == s)?.Id ?? (vocab.TryGetValue(s, out int id) ? id : null);
        var (fallbackBos, fallbackAddBos) = BosFromPostProcessor(JsonUtil.Property(root, "post_processor"), Lookup);
        fallbackBos ??= FirstKnown(Lookup, "<s>", "<|begin_of_text|>", "<|endoftext|>");
        int? fallbackEos = FirstKnown(Lookup, "</s>", "<|end_of_text|>", "<|endoftext|>");
        var specials = config.Resolve(Path.GetDirectoryName(path)!, Lookup, fallbackBos, fallbackEos, fallbackAddBos);

        var addedWithSpecialFlag = added.Select(t => t with { Special = special[t.Id] }).ToList();
        return new BpeTokenizer(TokenizerNames.HfBpe, bpe, normalizer, preTokenizer, addedWithSpecialFlag, table, vocabSize, specials);
    }

    internal static int? FirstKnown(Func<string, int?> lookup, params string[] candidates)
    {
        foreach (var c in candidates) if (lookup(c) is int id) return id;
        return null;
    }

    /// <summary>A <c>TemplateProcessing</c> post-processor whose single-sequence template starts with a special token means "add BOS".</summary>
    private static (int? Bos, bool AddBos) BosFromPostProcessor(JsonElement post, Func<string, int?> lookup)
    {
        if (JsonUtil.OptionalString(post, "type") != "TemplateProcessing") return (null, false);
        var single = JsonUtil.Property(post, "single");
        if (single.ValueKind != JsonValueKind.Array || single.GetArrayLength() == 0) return (null, false);
        var first = JsonUtil.Property(single[0], "SpecialToken");
        if (JsonUtil.OptionalString(first, "id") is { } bosToken && lookup(bosToken) is int id) return (id, true);
        return (null, false);
    }
}

/// <summary>
/// A Hugging Face <c>decoder</c> reduced to what decoding needs: per-token bytes and whether one leading space is dropped.
/// ByteLevel maps the printable alphabet back to bytes; the SentencePiece chain (Replace ▁→space, ByteFallback, Fuse, Strip)
/// becomes replacement + <c>&lt;0xNN&gt;</c> → byte + strip-one-leading-space.
/// </summary>
internal sealed class DecoderSpec
{
    private bool _byteLevel;
    private bool _byteFallback;
    private bool _stripLeadingSpace;
    private readonly List<(Pattern Pattern, string Content)> _replacements = [];

    /// <summary>GPT-2's decoder.</summary>
    public static DecoderSpec ByteLevel() => new() { _byteLevel = true };

    public static DecoderSpec FromJson(JsonElement json, string file, bool preTokenizerIsByteLevel)
    {
        var spec = new DecoderSpec();
        if (json.ValueKind == JsonValueKind.Null || json.ValueKind == JsonValueKind.Undefined)
        {
            // Without a decoder Hugging Face joins tokens with spaces; for byte-level vocabularies that is never what a checkpoint means.
            spec._byteLevel = preTokenizerIsByteLevel;
            return spec;
        }
        spec.Add(json, file);
        return spec;
    }

    private void Add(JsonElement json, string file)
    {
        string type = JsonUtil.RequiredString(json, "type", file, "decoder");
        switch (type)
        {
            case "Sequence":
                foreach (var d in JsonUtil.RequiredArray(json, "decoders", file, "Sequence decoder").EnumerateArray()) Add(d, file);
                break;
            case "ByteLevel":
                _byteLevel = true;
                break;
            case "ByteFallback":
                _byteFallback = true;
                break;
            case "Fuse":
                break;
            case "Replace":
                _replacements.Add((Pattern.FromJson(json, file, "Replace decoder"), JsonUtil.RequiredString(json, "content", file, "Replace decoder")));
                break;
            case "Strip":
                {
                    string content = JsonUtil.OptionalString(json, "content") ?? " ";
                    int start = JsonUtil.Property(json, "start") is { ValueKind: JsonValueKind.Number } s ? s.GetInt32() : 0;
                    int stop = JsonUtil.Property(json, "stop") is { ValueKind: JsonValueKind.Number } e ? e.GetInt32() : 0;
                    if (content != " " || start > 1 || stop != 0)
                        throw new TokenizerFormatException(file, $"Strip decoder (content '{content}', start {start}, stop {stop}) is not supported; only one leading space");
                    _stripLeadingSpace |= start == 1;
                    break;
                }
            case "Metaspace":
                {
                    string replacement = JsonUtil.OptionalString(json, "replacement") ?? "▁";
                    _replacements.Add((Pattern.Literal(replacement), " "));
                    string scheme = JsonUtil.OptionalString(json, "prepend_scheme")
                        ?? (JsonUtil.OptionalBool(json, "add_prefix_space", true) ? "always" : "never");
                    _stripLeadingSpace |= scheme != "never";
                    break;
                }
            default:
                throw new TokenizerFormatException(file, $"unsupported decoder type '{type}'");
        }
    }

    /// <summary>Bytes per id (null where the id is unused) and the special flags.</summary>
    public TokenDecodeTable BuildTable(string?[] tokens, bool[] special)
    {
        var bytes = new byte[]?[tokens.Length];
        for (int id = 0; id < tokens.Length; id++)
        {
            if (tokens[id] is { } t) bytes[id] = TokenBytes(t);
        }
        return new TokenDecodeTable(bytes, special, _stripLeadingSpace);
    }

    private byte[] TokenBytes(string token)
    {
        if (_byteLevel)
        {
            // As Hugging Face: a token with any character outside the byte alphabet is taken as plain UTF-8 (added tokens).
            return ByteLevelMapping.TryDecode(token) ?? Encoding.UTF8.GetBytes(token);
        }
        if (_byteFallback && token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
            && byte.TryParse(token.AsSpan(3, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out byte b))
        {
            return [b];
        }
        foreach (var (pattern, content) in _replacements) token = pattern.Replace(token, content);
        return Encoding.UTF8.GetBytes(token);
    }
}
