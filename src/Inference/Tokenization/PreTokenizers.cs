using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Serving.Inference.Tokenization;

/// <summary>A piece of text on its way to the BPE model; <see cref="AtTextStart"/> marks the piece at offset 0 of the input.</summary>
internal readonly record struct Piece(string Text, bool AtTextStart);

/// <summary>The subset of Hugging Face <c>pre_tokenizer</c>s that BPE checkpoints use. Each splits every piece further.</summary>
internal abstract class PreTokenizer
{
    /// <summary>GPT-2's split regex (<c>ByteLevel</c> with <c>use_regex: true</c>).</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    public static readonly Regex Gpt2Regex = new(Gpt2Pattern, RegexOptions.CultureInvariant | RegexOptions.Compiled);

    public abstract void Apply(List<Piece> pieces);

    /// <summary>True when this (or a part of it) maps bytes to GPT-2's printable alphabet.</summary>
    public virtual bool IsByteLevel => false;

    public static PreTokenizer? FromJson(JsonElement json, string file)
    {
        if (json.ValueKind == JsonValueKind.Null || json.ValueKind == JsonValueKind.Undefined) return null;
        string type = JsonUtil.RequiredString(json, "type", file, "pre_tokenizer");
        switch (type)
        {
            case "Sequence":
                var parts = new List<PreTokenizer>();
                foreach (var p in JsonUtil.RequiredArray(json, "pretokenizers", file, "Sequence pre_tokenizer").EnumerateArray())
                    if (FromJson(p, file) is { } pt) parts.Add(pt);
                return new SequencePreTokenizer(parts);
            case "ByteLevel":
                return new ByteLevelPreTokenizer(JsonUtil.OptionalBool(json, "add_prefix_space", false), JsonUtil.OptionalBool(json, "use_regex", true));
            case "Metaspace":
                string replacement = JsonUtil.OptionalString(json, "replacement") ?? "▁";
                string scheme = JsonUtil.OptionalString(json, "prepend_scheme")
                    ?? (JsonUtil.OptionalBool(json, "add_prefix_space", true) ? "always" : "never");
                if (scheme is not ("always" or "first" or "never"))
                    throw new TokenizerFormatException(file, $"Metaspace prepend_scheme '{scheme}' is not always/first/never");
                return new MetaspacePreTokenizer(replacement, scheme, JsonUtil.OptionalBool(json, "split", true));
            case "Split":
                string behavior = JsonUtil.OptionalString(json, "behavior") ?? "Isolated";
                if (behavior is not ("Removed" or "Isolated" or "MergedWithPrevious" or "MergedWithNext" or "Contiguous"))
                    throw new TokenizerFormatException(file, $"Split behavior '{behavior}' is unknown");
                return new SplitPreTokenizer(Pattern.FromJson(json, file, "Split pre_tokenizer"), behavior, JsonUtil.OptionalBool(json, "invert", false));
            case "Digits":
                return new DigitsPreTokenizer(JsonUtil.OptionalBool(json, "individual_digits", false));
            case "Whitespace":
                return new RegexKeepPreTokenizer(new Regex(@"\w+|[^\w\s]+", RegexOptions.CultureInvariant | RegexOptions.Compiled));
            case "WhitespaceSplit":
                return new RegexKeepPreTokenizer(new Regex(@"\S+", RegexOptions.CultureInvariant | RegexOptions.Compiled));
            default:
                throw new TokenizerFormatException(file, $"unsupported pre_tokenizer type '{type}'");
        }
    }

    /// <summary>Splits by (start, length, isDelimiter) spans according to a Hugging Face <c>SplitDelimiterBehavior</c>.</summary>
    protected static void SplitWithBehavior(Piece piece, List<(int Start, int Length)> matches, bool invert, string behavior, List<Piece> output)
    {
        string s = piece.Text;
        var spans = new List<(int Start, int Length, bool Delim)>();
        int at = 0;
        foreach (var (start, length) in matches)
        {
            if (start > at) spans.Add((at, start - at, invert));
            spans.Add((start, length, !invert));
            at = start + length;
        }
        if (at < s.Length) spans.Add((at, s.Length - at, invert));

        var merged = new List<(int Start, int Length)>();
        switch (behavior)
        {
            case "Removed":
                foreach (var sp in spans) if (!sp.Delim) merged.Add((sp.Start, sp.Length));
                break;
            case "Isolated":
                foreach (var sp in spans) merged.Add((sp.Start, sp.Length));
                break;
            case "MergedWithPrevious":
                {
                    bool prevDelim = false;
                    foreach (var sp in spans)
                    {
                        if (sp.Delim && !prevDelim && merged.Count > 0) merged[^1] = (merged[^1].Start, merged[^1].Length + sp.Length);
                        else merged.Add((sp.Start, sp.Length));
                        prevDelim = sp.Delim;
                    }
                    break;
                }
            case "MergedWithNext":
                {
                    bool pendingDelim = false;
                    foreach (var sp in spans)
                    {
                        if (pendingDelim && !sp.Delim) merged[^1] = (merged[^1].Start, merged[^1].Length + sp.Length);
                        else merged.Add((sp.Start, sp.Length));
                        pendingDelim = sp.Delim;
                    }
                    break;
                }
            case "Contiguous":
                {
                    bool prevDelim = false;
                    foreach (var sp in spans)
                    {
                        if (sp.Delim && prevDelim) merged[^1] = (merged[^1].Start, merged[^1].Length + sp.Length);
                        else merged.Add((sp.Start, sp.Length));
                        prevDelim = sp.Delim;
                    }
                    break;
                }
        }
        foreach (var (start, length) in merged)
            if (length > 0) output.Add(new Piece(s.Substring(start, length), piece.AtTextStart && start == 0));
    }

    private sealed class SequencePreTokenizer(List<PreTokenizer> parts) : PreTokenizer
    {
        public override bool IsByteLevel => parts.Exists(p => p.IsByteLevel);

        public override void Apply(List<Piece> pieces)
        {
            foreach (var p in parts) p.Apply(pieces);
        }
    }

    internal sealed class ByteLevelPreTokenizer(bool addPrefixSpace, bool useRegex) : PreTokenizer
    {
        public override bool IsByteLevel => true;

        public override void Apply(List<Piece> pieces)
        {
            var output = new List<Piece>(pieces.Count * 2);
            foreach (var piece in pieces)
            {
                string s = addPrefixSpace && !piece.Text.StartsWith(' ') ? " " + piece.Text : piece.Text;
                if (useRegex)
                {
                    for (var m = Gpt2Regex.Match(s); m.Success; m = m.NextMatch())
                        if (m.Length > 0) output.Add(new Piece(ToByteLevel(m.ValueSpan), piece.AtTextStart && m.Index == 0));
                }
                else if (s.Length > 0)
                {
                    output.Add(new Piece(ToByteLevel(s), piece.AtTextStart));
                }
            }
            pieces.Clear();
            pieces.AddRange(output);
        }

        private static string ToByteLevel(ReadOnlySpan<char> text)
        {
            int max = Encoding.UTF8.GetMaxByteCount(text.Length);
            Span<byte> bytes = max <= 1024 ? stackalloc byte[max] : new byte[max];
            int n = Encoding.UTF8.GetBytes(text, bytes);
            return ByteLevelMapping.Encode(bytes[..n]);
        }
    }

    private sealed class MetaspacePreTokenizer(string replacement, string scheme, bool split) : PreTokenizer
    {
        public override void Apply(List<Piece> pieces)
        {
            var output = new List<Piece>(pieces.Count * 2);
            var matches = new List<(int, int)>();
            foreach (var piece in pieces)
            {
                string s = piece.Text.Replace(" ", replacement, StringComparison.Ordinal);
                bool prepend = scheme == "always" || (scheme == "first" && piece.AtTextStart);
                if (prepend && !s.StartsWith(replacement, StringComparison.Ordinal)) s = replacement + s;
                if (!split)
                {
                    if (s.Length > 0) output.Add(piece with { Text = s });
                    continue;
                }
                matches.Clear();
                for (int at = 0; (at = s.IndexOf(replacement, at, StringComparison.Ordinal)) >= 0; at += replacement.Length)
                    matches.Add((at, replacement.Length));
                SplitWithBehavior(piece with { Text = s }, matches, invert: false, "MergedWithNext", output);
            }
            pieces.Clear();
            pieces.AddRange(output);
        }
    }

    private sealed class SplitPreTokenizer(Pattern pattern, string behavior, bool invert) : PreTokenizer
    {
        public override void Apply(List<Piece> pieces)
        {
            var output = new List<Piece>(pieces.Count * 2);
            var matches = new List<(int, int)>();
            foreach (var piece in pieces)
            {
                pattern.Matches(piece.Text, matches);
                SplitWithBehavior(piece, matches, invert, behavior, output);
            }
            pieces.Clear();
            pieces.AddRange(output);
        }
    }

    private sealed class DigitsPreTokenizer(bool individual) : PreTokenizer
    {
        public override void Apply(List<Piece> pieces)
        {
            var output = new List<Piece>(pieces.Count * 2);
            var matches = new List<(int, int)>();
            foreach (var piece in pieces)
            {
                matches.Clear();
                string s = piece.Text;
                for (int i = 0; i < s.Length; i++)
                    if (char.IsDigit(s[i])) matches.Add((i, 1));
                SplitWithBehavior(piece, matches, invert: false, individual ? "Isolated" : "Contiguous", output);
            }
            pieces.Clear();
            pieces.AddRange(output);
        }
    }

    /// <summary>Keeps only the regex matches (Hugging Face <c>Whitespace</c>, <c>WhitespaceSplit</c>).</summary>
    private sealed class RegexKeepPreTokenizer(Regex regex) : PreTokenizer
    {
        public override void Apply(List<Piece> pieces)
        {
            var output = new List<Piece>(pieces.Count * 2);
            foreach (var piece in pieces)
                for (var m = regex.Match(piece.Text); m.Success; m = m.NextMatch())
                    if (m.Length > 0) output.Add(new Piece(m.Value, piece.AtTextStart && m.Index == 0));
            pieces.Clear();
            pieces.AddRange(output);
        }
    }
}
