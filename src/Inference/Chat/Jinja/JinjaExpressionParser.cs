using System.Globalization;

namespace Serving.Inference.Chat.Jinja;

/// <summary>
/// Precedence climbing over the tokens of <see cref="JinjaLexer.Lex"/>: inline <c>a if c else b</c>, or, and, not,
/// comparisons / in / is (tests with optional arguments), + - ~, * %, unary minus, filters (with arguments), then postfix
/// (.attr, .method(), [key], [a:b:step]) on primaries; calls take positional and <c>name=value</c> arguments.
/// </summary>
internal sealed class JinjaExpressionParser
{
    private readonly List<string> _tokens;
    private int _pos;

    private JinjaExpressionParser(List<string> tokens) => _tokens = tokens;

    public static Expr Parse(string text)
    {
        var p = new JinjaExpressionParser(JinjaLexer.Lex(text));
        var e = p.ParseConditional();
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

    private Expr ParseConditional()
    {
        var e = ParseOr();
        if (!Accept("if")) return e;
        var cond = ParseOr();
        return new Conditional(cond, e, Accept("else") ? ParseConditional() : null);
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
                var name = _tokens[_pos++];
                var args = new List<Expr>();
                if (Accept("("))
                {
                    (args, _) = ParseArguments();
                }
                else if (name is "equalto" or "eq" or "sameas" or "divisibleby" && Peek is { } next && next != ")" && next != "and" && next != "or")
                {
                    args.Add(ParseConcat()); // Jinja allows `x is equalto 3` without parentheses
                }
                e = new Test(e, name, negated, args);
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
        while (Peek is "%" or "*")
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
        while (Accept("|"))
        {
            var name = _tokens[_pos++];
            var (args, kwargs) = Accept("(") ? ParseArguments() : ([], []);
            e = new Filter(e, name, args, kwargs);
        }
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
                    var (args, kwargs) = ParseArguments();
                    if (kwargs.Count > 0) throw new FormatException($"chat template: keyword arguments to .{name}() are not supported");
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
                    Expr? end = Peek is "]" or ":" ? null : ParseOr();
                    Expr? step = Accept(":") && Peek != "]" ? ParseOr() : null;
                    Expect("]");
                    e = new Slice(e, start, end, step);
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
            var e = ParseConditional();
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
        if (t == "[")
        {
            var items = new List<Expr>();
            if (!Accept("]"))
            {
                do items.Add(ParseConditional()); while (Accept(",") && Peek != "]");
                Expect("]");
            }
            return new ListLiteral(items);
        }
        if (Accept("("))
        {
            var (args, kwargs) = ParseArguments();
            return new Call(t, args, kwargs);
        }
        return new Variable(t);
    }

    /// <summary>After "(": positional then <c>name=value</c> arguments up to ")".</summary>
    private (List<Expr> Args, Dictionary<string, Expr> Kwargs) ParseArguments()
    {
        var args = new List<Expr>();
        var kwargs = new Dictionary<string, Expr>();
        if (Accept(")")) return (args, kwargs);
        do
        {
            if (_pos + 1 < _tokens.Count && _tokens[_pos + 1] == "=" && char.IsLetter(_tokens[_pos][0]))
            {
                var name = _tokens[_pos];
                _pos += 2;
                kwargs[name] = ParseConditional();
            }
            else
            {
                if (kwargs.Count > 0) throw new FormatException("chat template: a positional argument follows a keyword argument");
                args.Add(ParseConditional());
            }
        }
        while (Accept(","));
        Expect(")");
        return (args, kwargs);
    }
}
