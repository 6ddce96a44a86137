using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Serving.Inference.Tokenization;

/// <summary>The subset of Hugging Face <c>normalizer</c>s that BPE checkpoints use.</summary>
internal abstract class TextNormalizer
{
    public abstract string Normalize(string text);

    /// <summary>Builds a normalizer from its JSON; null JSON means none. Unknown types are a format error.</summary>
    public static TextNormalizer? FromJson(JsonElement json, string file)
    {
        if (json.ValueKind == JsonValueKind.Null || json.ValueKind == JsonValueKind.Undefined) return null;
        string type = JsonUtil.RequiredString(json, "type", file, "normalizer");
        switch (type)
        {
            case "Sequence":
                var parts = new List<TextNormalizer>();
                foreach (var n in JsonUtil.RequiredArray(json, "normalizers", file, "Sequence normalizer").EnumerateArray())
                    if (FromJson(n, file) is { } p) parts.Add(p);
                return new SequenceNormalizer(parts);
            case "Replace":
                return new ReplaceNormalizer(Pattern.FromJson(json, file, "Replace normalizer"),
                    JsonUtil.RequiredString(json, "content", file, "Replace normalizer"));
            case "Prepend":
                return new PrependNormalizer(JsonUtil.RequiredString(json, "prepend", file, "Prepend normalizer"));
            case "NFC": return new UnicodeNormalizer(NormalizationForm.FormC);
            case "NFD": return new UnicodeNormalizer(NormalizationForm.FormD);
            case "NFKC": return new UnicodeNormalizer(NormalizationForm.FormKC);
            case "NFKD": return new UnicodeNormalizer(NormalizationForm.FormKD);
            case "Lowercase": return new LowercaseNormalizer();
            case "Strip":
                return new StripNormalizer(JsonUtil.OptionalBool(json, "strip_left", true), JsonUtil.OptionalBool(json, "strip_right", true));
            default:
                throw new TokenizerFormatException(file, $"unsupported normalizer type '{type}'");
        }
    }

    private sealed class SequenceNormalizer(List<TextNormalizer> parts) : TextNormalizer
    {
        public override string Normalize(string text)
        {
            foreach (var p in parts) text = p.Normalize(text);
            return text;
        }
    }

    private sealed class ReplaceNormalizer(Pattern pattern, string content) : TextNormalizer
    {
        public override string Normalize(string text) => pattern.Replace(text, content);
    }

    private sealed class PrependNormalizer(string prefix) : TextNormalizer
    {
        // Hugging Face prepends only to non-empty strings.
        public override string Normalize(string text) => text.Length == 0 ? text : prefix + text;
    }

    private sealed class UnicodeNormalizer(NormalizationForm form) : TextNormalizer
    {
        public override string Normalize(string text) => text.IsNormalized(form) ? text : text.Normalize(form);
    }

    private sealed class LowercaseNormalizer : TextNormalizer
    {
        public override string Normalize(string text) => text.ToLowerInvariant();
    }

    private sealed class StripNormalizer(bool left, bool right) : TextNormalizer
    {
        public override string Normalize(string text) => left && right ? text.Trim() : left ? text.TrimStart() : right ? text.TrimEnd() : text;
    }
}

/// <summary>A Hugging Face pattern: <c>{"String": "..."}</c> (literal) or <c>{"Regex": "..."}</c>.</summary>
internal sealed class Pattern
{
    private readonly string? _literal;
    private readonly Regex? _regex;

    private Pattern(string? literal, Regex? regex) { _literal = literal; _regex = regex; }

    public static Pattern Literal(string literal) => new(literal, null);

    public static Pattern FromJson(JsonElement owner, string file, string what)
    {
        if (!owner.TryGetProperty("pattern", out var p) || p.ValueKind != JsonValueKind.Object)
            throw new TokenizerFormatException(file, $"{what} has no 'pattern' object");
        if (p.TryGetProperty("String", out var s) && s.ValueKind == JsonValueKind.String)
            return new Pattern(s.GetString()!, null);
        if (p.TryGetProperty("Regex", out var r) && r.ValueKind == JsonValueKind.String)
        {
            try
            {
                return new Pattern(null, new Regex(r.GetString()!, RegexOptions.CultureInvariant | RegexOptions.Compiled));
            }
            catch (ArgumentException e)
            {
                throw new TokenizerFormatException(file, $"{what} has a regex .NET cannot parse: {e.Message}", e);
            }
        }
        throw new TokenizerFormatException(file, $"{what} pattern must be {{\"String\": ...}} or {{\"Regex\": ...}}");
    }

    public string Replace(string text, string content) =>
        _literal is not null ? (_literal.Length == 0 ? text : text.Replace(_literal, content, StringComparison.Ordinal)) : _regex!.Replace(text, content);

    /// <summary>Non-overlapping matches as (start, length), left to right.</summary>
    public void Matches(string text, List<(int Start, int Length)> output)
    {
        output.Clear();
        if (_literal is not null)
        {
            if (_literal.Length == 0) return;
            int at = 0;
            while ((at = text.IndexOf(_literal, at, StringComparison.Ordinal)) >= 0)
            {
                output.Add((at, _literal.Length));
                at += _literal.Length;
            }
            return;
        }
        for (var m = _regex!.Match(text); m.Success; m = m.NextMatch())
            if (m.Length > 0) output.Add((m.Index, m.Length));
    }
}
