namespace Serving.Inference.Constraints;

/// <summary>
/// Regular expressions (the ECMAScript subset schemas and <c>guided_regex</c> use) to byte languages: literals, <c>.</c>,
/// classes <c>[a-z]</c> / <c>[^"]</c>, escapes <c>\d \w \s \D \W \S \n \t \uXXXX</c> and escaped metacharacters, groups
/// <c>(…)</c> <c>(?:…)</c> <c>(?&lt;name&gt;…)</c>, alternation, quantifiers <c>* + ? {m} {m,} {m,n}</c> (lazy forms read as
/// greedy: the language is the same), <c>^</c> at the start and <c>$</c> at the end. Lookaround, backreferences and
/// anchors elsewhere are refused. Shorthand classes and their negations are read conservatively (ASCII <c>\d \w \s</c>;
/// <c>\D \W \S</c> and <c>.</c> only over ASCII), so every accepted string matches under both ECMAScript and .NET rules.
/// In <see cref="Context.JsonString"/> characters are written as a JSON string's content (<c>"</c> and <c>\</c>
/// escaped, control characters as <c>\n \t</c> or left out) and an unanchored pattern may have anything around it.
/// </summary>
internal static class RegexSyntax
{
    public enum Context { Raw, JsonString }

    private static readonly CodePointSet Digit = CodePointSet.Of(('0', '9'));
    private static readonly CodePointSet Word = CodePointSet.Of(('0', '9'), ('A', 'Z'), ('a', 'z'), ('_', '_'));
    private static readonly CodePointSet Space = CodePointSet.Of((' ', ' '), ('\t', '\r'));
    private static readonly CodePointSet Ascii = CodePointSet.Of((0, 0x7F));
    private static readonly CodePointSet Dot = CodePointSet.Of((0, 0x10FFFF)).Minus(CodePointSet.Of(('\n', '\n'), ('\r', '\r'), (0x2028, 0x2029)));

    public static Rx Parse(string pattern, Context context, string path)
    {
        var p = new Parser(pattern, context, path);
        var anchoredStart = p.Eat('^');
        var body = p.Alternation();
        var anchoredEnd = false;
        if (p.Eat('$')) anchoredEnd = true;
        if (!p.AtEnd) throw p.Error($"unexpected '{pattern[p.Pos]}' at offset {p.Pos}");
        if (context == Context.Raw) return body;
        var any = Rx.Star(Chars(Dot, context));
        return Rx.Seq(anchoredStart ? Rx.Empty : any, body, anchoredEnd ? Rx.Empty : any);
    }

    /// <summary>Code points as bytes: raw UTF-8, or as JSON string content.</summary>
    internal static Rx Chars(CodePointSet set, Context context)
    {
        if (context == Context.Raw) return Utf8Ranges.Encode(set);
        var plain = set.Minus(CodePointSet.Of((0, 0x1F), ('"', '"'), ('\\', '\\')));
        var alts = new List<Rx> { Utf8Ranges.Encode(plain) };
        if (set.Contains('"')) alts.Add(Rx.Literal("\\\""));
        if (set.Contains('\\')) alts.Add(Rx.Literal("\\\\"));
        if (set.Contains('\n')) alts.Add(Rx.Literal("\\n"));
        if (set.Contains('\t')) alts.Add(Rx.Literal("\\t"));
        if (set.Contains('\r')) alts.Add(Rx.Literal("\\r"));
        return Rx.Alt(alts);
    }

    private sealed class Parser(string s, Context context, string path)
    {
        public int Pos;

        public bool AtEnd => Pos >= s.Length;

        public bool Eat(char c)
        {
            if (Pos < s.Length && s[Pos] == c) { Pos++; return true; }
            return false;
        }

        public ConstraintException Error(string what) => new(path, "pattern", $"The regular expression '{s}' is not supported: {what}.");

        public Rx Alternation()
        {
            var alts = new List<Rx> { Sequence() };
            while (Eat('|')) alts.Add(Sequence());
            return Rx.Alt(alts);
        }

        private Rx Sequence()
        {
            var parts = new List<Rx>();
            while (!AtEnd && s[Pos] != '|' && s[Pos] != ')')
            {
                if (s[Pos] == '$' && Pos == s.Length - 1) break;
                parts.Add(Quantified(Atom()));
            }
            return Rx.Seq([.. parts]);
        }

        private Rx Quantified(Rx atom)
        {
            while (!AtEnd)
            {
                int min, max;
                var c = s[Pos];
                if (c == '*') { min = 0; max = -1; Pos++; }
                else if (c == '+') { min = 1; max = -1; Pos++; }
                else if (c == '?') { min = 0; max = 1; Pos++; }
                else if (c == '{' && TryBraces(out min, out max)) { }
                else break;
                Eat('?');
                if (Pos < s.Length && s[Pos] == '+') throw Error("possessive quantifiers");
                if (max > 1000 || min > 1000) throw Error("a repetition count above 1000");
                atom = Rx.Repeat(atom, min, max < 0 ? null : max);
            }
            return atom;
        }

        private bool TryBraces(out int min, out int max)
        {
            min = max = 0;
            var end = s.IndexOf('}', Pos);
            if (end < 0) return false;
            var inner = s[(Pos + 1)..end];
            var comma = inner.IndexOf(',');
            if (comma < 0)
            {
                if (!int.TryParse(inner, out min)) return false;
                max = min;
            }
            else
            {
                if (!int.TryParse(inner[..comma], out min)) return false;
                var rest = inner[(comma + 1)..];
                if (rest.Length == 0) max = -1;
                else if (!int.TryParse(rest, out max)) return false;
            }
            Pos = end + 1;
            return true;
        }

        private Rx Atom()
        {
            var c = s[Pos++];
            switch (c)
            {
                case '(':
                    if (Eat('?'))
                    {
                        if (Eat(':')) { }
                        else if (Pos < s.Length && s[Pos] == '<' && Pos + 1 < s.Length && s[Pos + 1] != '=' && s[Pos + 1] != '!')
                        {
                            var close = s.IndexOf('>', Pos);
                            if (close < 0) throw Error("an unterminated group name");
                            Pos = close + 1;
                        }
                        else throw Error("lookaround or inline flags");
                    }
                    var inner = Alternation();
                    if (!Eat(')')) throw Error("a missing ')'");
                    return inner;
                case '[':
                    return Chars(Class(), context);
                case '.':
                    return Chars(context == Context.Raw ? Dot : Dot.Intersect(Ascii), context);
                case '\\':
                    return Chars(Escape(inClass: false), context);
                case '^' or '$':
                    throw Error($"'{c}' inside the expression");
                case '*' or '+' or '?':
                    throw Error($"'{c}' with nothing to repeat");
                case ')':
                    throw Error("an unmatched ')'");
                default:
                    if (char.IsHighSurrogate(c) && Pos < s.Length && char.IsLowSurrogate(s[Pos]))
                    {
                        return Chars(CodePointSet.Single(char.ConvertToUtf32(c, s[Pos++])), context);
                    }
                    return Chars(CodePointSet.Single(c), context);
            }
        }

        private CodePointSet Class()
        {
            var negate = Eat('^');
            var ranges = new List<CodePointSet>();
            var first = true;
            while (true)
            {
                if (AtEnd) throw Error("a missing ']'");
                if (s[Pos] == ']' && !first) { Pos++; break; }
                first = false;
                CodePointSet lo;
                int loChar = -1;
                if (s[Pos] == '\\')
                {
                    Pos++;
                    lo = Escape(inClass: true);
                    if (lo.Ranges.Count == 1 && lo.Ranges[0].Lo == lo.Ranges[0].Hi) loChar = lo.Ranges[0].Lo;
                }
                else
                {
                    loChar = s[Pos++];
                    lo = CodePointSet.Single(loChar);
                }
                if (loChar >= 0 && Pos + 1 < s.Length && s[Pos] == '-' && s[Pos + 1] != ']')
                {
                    Pos++;
                    int hiChar;
                    if (s[Pos] == '\\')
                    {
                        Pos++;
                        var hi = Escape(inClass: true);
                        if (hi.Ranges.Count != 1 || hi.Ranges[0].Lo != hi.Ranges[0].Hi) throw Error("a class range ending in a class");
                        hiChar = hi.Ranges[0].Lo;
                    }
                    else hiChar = s[Pos++];
                    if (hiChar < loChar) throw Error("a class range out of order");
                    ranges.Add(CodePointSet.Of((loChar, hiChar)));
                }
                else ranges.Add(lo);
            }
            var set = new CodePointSet(ranges.SelectMany(r => r.Ranges));
            // A negated class is read over ASCII only when it involves shorthand classes; explicit characters are exact.
            return negate ? set.Complement() : set;
        }

        private CodePointSet Escape(bool inClass)
        {
            if (AtEnd) throw Error("a trailing '\\'");
            var c = s[Pos++];
            switch (c)
            {
                case 'd': return Digit;
                case 'w': return Word;
                case 's': return Space;
                case 'D': return Ascii.Minus(Digit);
                case 'W': return Ascii.Minus(Word);
                case 'S': return Ascii.Minus(Space).Minus(CodePointSet.Of((0, 0x1F), (0x7F, 0x7F)));
                case 'n': return CodePointSet.Single('\n');
                case 't': return CodePointSet.Single('\t');
                case 'r': return CodePointSet.Single('\r');
                case 'f': return CodePointSet.Single('\f');
                case 'v': return CodePointSet.Single('\v');
                case '0': return CodePointSet.Single(0);
                case 'u':
                    if (Pos + 4 <= s.Length && int.TryParse(s.AsSpan(Pos, 4), System.Globalization.NumberStyles.HexNumber, null, out var u))
                    {
                        Pos += 4;
                        return CodePointSet.Single(u);
                    }
                    throw Error("a malformed \\u escape");
                case 'x':
                    if (Pos + 2 <= s.Length && int.TryParse(s.AsSpan(Pos, 2), System.Globalization.NumberStyles.HexNumber, null, out var x))
                    {
                        Pos += 2;
                        return CodePointSet.Single(x);
                    }
                    throw Error("a malformed \\x escape");
                case 'b' when inClass: return CodePointSet.Single('\b');
                case 'b' or 'B': throw Error("word boundaries");
                default:
                    if (char.IsAsciiDigit(c)) throw Error("backreferences");
                    if (char.IsAsciiLetter(c)) throw Error($"the escape '\\{c}'");
                    return CodePointSet.Single(c);
            }
        }
    }
}
