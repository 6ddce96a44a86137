using System.Text;

namespace Serving.Inference.Chat.Jinja;

/// <summary>What a segment of template text is.</summary>
internal enum SegmentKind { Text, Output, Statement }

/// <summary>Literal text, the body of <c>{{ }}</c>, or the body of <c>{% %}</c> (comments are dropped).</summary>
internal sealed record Segment(SegmentKind Kind, string Body);

/// <summary>
/// Splits a template into segments (with <c>-</c> whitespace control applied), and an expression into tokens.
/// Malformed input is a <see cref="FormatException"/> naming the offset or the text.
/// </summary>
internal static class JinjaLexer
{
    /// <summary>
    /// Splits <paramref name="src"/> the way transformers' Jinja environment does (<c>trim_blocks</c> and
    /// <c>lstrip_blocks</c> on): <c>-</c> strips all whitespace on its side of a tag; the first newline after a block or
    /// comment tag is dropped; spaces and tabs between the start of a line and a block or comment tag are dropped
    /// (not for <c>{%+</c>).
    /// </summary>
    public static List<Segment> Tokenize(string src)
    {
        var segments = new List<Segment>();
        var i = 0;
        var trimNextLeading = false;
        var trimNextNewline = false;
        var lineStarting = true;
        while (i < src.Length)
        {
            var open = IndexOfOpen(src, i);
            var text = open < 0 ? src[i..] : src[i..open];
            if (trimNextLeading) text = text.TrimStart();
            else if (trimNextNewline && text.StartsWith('\n')) text = text[1..];
            else if (trimNextNewline && text.StartsWith("\r\n", StringComparison.Ordinal)) text = text[2..];
            trimNextLeading = false;
            if (open < 0)
            {
                if (text.Length > 0) segments.Add(new Segment(SegmentKind.Text, text));
                break;
            }
            var kind = src[open + 1];
            var bodyStart = open + 2;
            var marker = bodyStart < src.Length ? src[bodyStart] : '\0';
            var trimBefore = marker == '-';
            if (trimBefore)
            {
                text = text.TrimEnd();
            }
            else if (kind is '%' or '#' && marker != '+')
            {
                // lstrip_blocks: only whitespace between the line's start and the tag goes.
                var lineStart = text.LastIndexOf('\n') + 1;
                if ((lineStart > 0 || lineStarting) && text.AsSpan(lineStart).IndexOfAnyExcept(' ', '\t') < 0) text = text[..lineStart];
            }
            if (text.Length > 0) segments.Add(new Segment(SegmentKind.Text, text));
            var close = kind switch { '{' => "}}", '%' => "%}", _ => "#}" };
            var end = src.IndexOf(close, bodyStart, StringComparison.Ordinal);
            if (end < 0) throw new FormatException($"chat template: unclosed '{src[open]}{kind}' at offset {open}");
            var body = src[(trimBefore || marker == '+' ? bodyStart + 1 : bodyStart)..end];
            if (body.EndsWith('-'))
            {
                body = body[..^1];
                trimNextLeading = true;
            }
            if (kind == '{') segments.Add(new Segment(SegmentKind.Output, body.Trim()));
            else if (kind == '%') segments.Add(new Segment(SegmentKind.Statement, body.Trim()));
            i = end + 2;
            // trim_blocks: a block or comment tag swallows the newline right after it (and the next line starts there).
            trimNextNewline = kind is '%' or '#';
            lineStarting = trimNextNewline && i < src.Length && (src[i] == '\n' || src.AsSpan(i).StartsWith("\r\n"));
        }
        return segments;
    }

    private static int IndexOfOpen(string s, int from)
    {
        for (var i = from; i < s.Length - 1; i++)
        {
            if (s[i] == '{' && s[i + 1] is '{' or '%' or '#') return i;
        }
        return -1;
    }

    /// <summary>The tokens of one expression: strings (quotes kept, escapes applied), names and numbers, operators.</summary>
    public static List<string> Lex(string s)
    {
        var tokens = new List<string>();
        var i = 0;
        while (i < s.Length)
        {
            var c = s[i];
            if (char.IsWhiteSpace(c))
            {
                i++;
            }
            else if (c is '\'' or '"')
            {
                var sb = new StringBuilder().Append(c);
                i++;
                while (i < s.Length && s[i] != c)
                {
                    if (s[i] == '\\' && i + 1 < s.Length)
                    {
                        i++;
                        sb.Append(s[i] switch { 'n' => '\n', 't' => '\t', 'r' => '\r', var o => o });
                    }
                    else
                    {
                        sb.Append(s[i]);
                    }
                    i++;
                }
                if (i >= s.Length) throw new FormatException($"chat template: unterminated string in '{s}'");
                sb.Append(c);
                i++;
                tokens.Add(sb.ToString());
            }
            else if (char.IsLetterOrDigit(c) || c == '_')
            {
                var start = i;
                while (i < s.Length && (char.IsLetterOrDigit(s[i]) || s[i] == '_')) i++;
                tokens.Add(s[start..i]);
            }
            else if (i + 1 < s.Length && s.Substring(i, 2) is "==" or "!=" or "<=" or ">=")
            {
                tokens.Add(s.Substring(i, 2));
                i += 2;
            }
            else if ("+-~|.[](),<>%:=*/{}".Contains(c))
            {
                tokens.Add(c.ToString());
                i++;
            }
            else
            {
                throw new FormatException($"chat template: unexpected character '{c}' in '{s}'");
            }
        }
        return tokens;
    }
}
