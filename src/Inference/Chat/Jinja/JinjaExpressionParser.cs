using System.Globalization;

namespace Serving.Inference.Chat.Jinja;

/// <summary>
/// Precedence climbing over the tokens of <see cref="JinjaLexer.Lex"/>: or, and, not, comparisons / in / is, + - ~,
/// %, unary minus, filters, then postfix (.attr, .method(), [key], [a:b]) on primaries.
/// </summary>
internal sealed class JinjaExpressionParser
{
    private readonly List<string> _tokens;
    private int _pos;

    private JinjaExpressionParser(List<string> tokens) => _tokens = tokens;

    public static Expr Parse(string text)
    {
        var p = new JinjaExpressionParser(JinjaLexer.Lex(text));
        var e = p.ParseOr();
        if (p._pos != p._tokens.Count) throw new FormatException($"chat template: unexpected '{p._tokens[p._pos]}' in '{text}'");
        return e;
    }

    private string? Peek => _pos < _tokens.Count ? _tokens[_pos] : null;

    private bool Accept(string t)
    {
        if (Peek != t) return false;
        _pos++;
        return true;
    }

    private void Expect(string t)
    {
        if (!Accept(t)) throw new FormatException($"chat template: expected '{t}', found '{Peek ?? "end"}'");
    }

    private Expr ParseOr()
    {
        var e = ParseAnd();
        while (Accept("or")) e = new Binary("or", e, ParseAnd());
        return e;
    }

    private Expr ParseAnd()
    {
        var e = ParseNot();
        while (Accept("and")) e = new Binary("and", e, ParseNot());
        return e;
    }

    private Expr ParseNot() => Accept("not") ? new Unary("not", ParseNot()) : ParseComparison();

    private Expr ParseComparison()
    {
        var e = ParseConcat();
        while (true)
        {
            if (Peek is "==" or "!=" or "<" or ">" or "<=" or ">=")
            {
                var op = _tokens[_pos++];
                e = new Binary(op, e, ParseConcat());
            }
            else if (Peek == "in")
            {
                _pos++;
                e = new Binary("in", e, ParseConcat());
            }
            else if (Peek == "not" && _pos + 1 < _tokens.Count && _tokens[_pos + 1] == "in")
            {
                _pos += 2;
                e = new Unary("not", new Binary("in", e, ParseConcat()));
            }
            else if (Accept("is"))
            {
                var negated = Accept("not");
                e = new Test(e, _tokens[_pos++], negated);
            }
            else
            {
                return e;
            }
        }
    }

    private Expr ParseConcat()
    {
        var e = ParseMul();
        while (Peek is "+" or "-" or "~")
        {
            var op = _tokens[_pos++];
            e = new Binary(op, e, ParseMul());
        }
        return e;
    }

    private Expr ParseMul()
    {
        var e = ParseUnary();
        while (Peek is "%")
        {
            var op = _tokens[_pos++];
            e = new Binary(op, e, ParseUnary());
        }
        return e;
    }

    private Expr ParseUnary() => Accept("-") ? new Unary("-", ParseUnary()) : ParseFiltered();

    private Expr ParseFiltered()
    {
        var e = ParsePostfix();
        while (Accept("|")) e = new Filter(e, _tokens[_pos++]);
        return e;
    }

    private Expr ParsePostfix()
    {
        var e = ParsePrimary();
        while (true)
        {
            if (Accept("."))
            {
                var name = _tokens[_pos++];
                if (Accept("("))
                {
                    var args = new List<Expr>();
                    if (!Accept(")"))
                    {
                        do args.Add(ParseOr()); while (Accept(","));
                        Expect(")");
                    }
                    e = new MethodCall(e, name, args);
                }
                else
                {
                    e = new Lookup(e, new Literal(name));
                }
            }
            else if (Accept("["))
            {
                Expr? start = Peek == ":" ? null : ParseOr();
                if (Accept(":"))
                {
                    Expr? end = Peek == "]" ? null : ParseOr();
                    Expect("]");
                    e = new Slice(e, start, end);
                }
                else
                {
                    Expect("]");
                    e = new Lookup(e, start!);
                }
            }
            else
            {
                return e;
            }
        }
    }

    private Expr ParsePrimary()
    {
        var t = Peek ?? throw new FormatException("chat template: expression ends early");
        _pos++;
        if (t == "(")
        {
            var e = ParseOr();
            Expect(")");
            return e;
        }
        if (t[0] is '\'' or '"') return new Literal(t[1..^1]);
        if (char.IsDigit(t[0])) return new Literal(long.Parse(t, CultureInfo.InvariantCulture));
        switch (t)
        {
            case "true" or "True": return new Literal(true);
            case "false" or "False": return new Literal(false);
            case "none" or "None": return new Literal(null);
        }
        if (Accept("("))
        {
            var args = new List<Expr>();
            if (!Accept(")"))
            {
                do args.Add(ParseOr()); while (Accept(","));
                Expect(")");
            }
            return new Call(t, args);
        }
        return new Variable(t);
    }
}
