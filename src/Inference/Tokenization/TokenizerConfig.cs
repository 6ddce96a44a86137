using System.Globalization;
using System.Text.Json;

namespace Serving.Inference.Tokenization;

/// <summary>What this project reads from <c>tokenizer_config.json</c> (and <c>special_tokens_map.json</c>, <c>added_tokens.json</c>).</summary>
internal sealed class TokenizerConfig
{
    public string? TokenizerClass { get; private init; }
    public string? BosToken { get; private init; }
    public string? EosToken { get; private init; }
    public string? UnkToken { get; private init; }
    public string? PadToken { get; private init; }
    public bool? AddBosToken { get; private init; }
    public List<string> AdditionalSpecialTokens { get; } = [];

    /// <summary><c>added_tokens_decoder</c> / <c>added_tokens.json</c> entries.</summary>
    public List<AddedToken> AddedTokens { get; } = [];

    public static readonly TokenizerConfig Empty = new();

    public static TokenizerConfig Read(string directory)
    {
        string path = Path.Combine(directory, "tokenizer_config.json");
        string mapPath = Path.Combine(directory, "special_tokens_map.json");
        string addedPath = Path.Combine(directory, "added_tokens.json");
        JsonElement root = default, map = default;
        JsonDocument? doc = null, mapDoc = null;
        try
        {
            if (File.Exists(path))
            {
                doc = JsonUtil.Parse(path);
                root = doc.RootElement;
                if (root.ValueKind != JsonValueKind.Object) throw new TokenizerFormatException(path, "top level must be a JSON object");
            }
            if (File.Exists(mapPath))
            {
                mapDoc = JsonUtil.Parse(mapPath);
                map = mapDoc.RootElement;
            }

            string? Token(string key) => JsonUtil.TokenContent(JsonUtil.Property(root, key)) ?? JsonUtil.TokenContent(JsonUtil.Property(map, key));
            bool? addBos = JsonUtil.Property(root, "add_bos_token").ValueKind switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                _ => null,
            };
            var config = new TokenizerConfig
            {
                TokenizerClass = JsonUtil.OptionalString(root, "tokenizer_class"),
                BosToken = Token("bos_token"),
                EosToken = Token("eos_token"),
                UnkToken = Token("unk_token"),
                PadToken = Token("pad_token"),
                AddBosToken = addBos,
            };
            foreach (var source in new[] { JsonUtil.Property(root, "additional_special_tokens"), JsonUtil.Property(map, "additional_special_tokens") })
            {
                if (source.ValueKind != JsonValueKind.Array) continue;
                foreach (var t in source.EnumerateArray())
                    if (JsonUtil.TokenContent(t) is { } s) config.AdditionalSpecialTokens.Add(s);
            }

            var decoder = JsonUtil.Property(root, "added_tokens_decoder");
            if (decoder.ValueKind == JsonValueKind.Object)
            {
                foreach (var entry in decoder.EnumerateObject())
                {
                    if (!int.TryParse(entry.Name, NumberStyles.None, CultureInfo.InvariantCulture, out int id))
                        throw new TokenizerFormatException(path, $"added_tokens_decoder key '{entry.Name}' is not a token id");
                    string content = JsonUtil.TokenContent(entry.Value)
                        ?? throw new TokenizerFormatException(path, $"added_tokens_decoder[{entry.Name}] has no 'content'");
                    config.AddedTokens.Add(new AddedToken(content, id,
                        JsonUtil.OptionalBool(entry.Value, "special", true),
                        JsonUtil.OptionalBool(entry.Value, "lstrip", false),
                        JsonUtil.OptionalBool(entry.Value, "rstrip", false)));
                }
            }
            if (File.Exists(addedPath))
            {
                using var added = JsonUtil.Parse(addedPath);
                if (added.RootElement.ValueKind != JsonValueKind.Object) throw new TokenizerFormatException(addedPath, "top level must be an object of token → id");
                foreach (var entry in added.RootElement.EnumerateObject())
                {
                    if (entry.Value.ValueKind != JsonValueKind.Number || !entry.Value.TryGetInt32(out int id) || id < 0)
                        throw new TokenizerFormatException(addedPath, $"id of '{entry.Name}' is not a non-negative integer");
                    if (!config.AddedTokens.Exists(t => t.Id == id)) config.AddedTokens.Add(new AddedToken(entry.Name, id, Special: false));
                }
            }
            return config;
        }
        finally
        {
            doc?.Dispose();
            mapDoc?.Dispose();
        }
    }

    /// <summary>Names of tokens the config declares special (bos/eos/unk/pad/additional).</summary>
    public IEnumerable<string> DeclaredSpecialTokens()
    {
        foreach (var t in new[] { BosToken, EosToken, UnkToken, PadToken }) if (t is not null) yield return t;
        foreach (var t in AdditionalSpecialTokens) yield return t;
    }

    /// <summary>Resolves BOS/EOS ids; a token the config names but the vocabulary lacks is a format error.</summary>
    public SpecialTokenChoice Resolve(string directory, Func<string, int?> lookup, int? fallbackBos, int? fallbackEos, bool fallbackAddBos)
    {
        string file = Path.Combine(directory, "tokenizer_config.json");
        int? Find(string? token, string what)
        {
            if (token is null) return null;
            return lookup(token) ?? throw new TokenizerFormatException(file, $"{what} '{token}' is not in the vocabulary");
        }
        int? bos = Find(BosToken, "bos_token") ?? fallbackBos;
        int? eos = Find(EosToken, "eos_token") ?? fallbackEos;
        bool addBos = (AddBosToken ?? fallbackAddBos) && bos is not null;
        return new SpecialTokenChoice(bos, eos, addBos);
    }
}
