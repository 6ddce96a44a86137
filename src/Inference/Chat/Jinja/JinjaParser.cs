using System.Globalization;

namespace Serving.Inference.Chat.Jinja;

/// <summary>
/// Builds the syntax tree from <see cref="JinjaLexer"/>'s tokens with Jinja's grammar and precedence (conditional
/// expressions, or, and, not, comparison chains with <c>in</c>/<c>not in</c>, <c>+ -</c>, <c>~</c>, <c>* / // %</c>,
/// <c>**</c>, unary minus, then primaries with attribute, subscript, slice and call postfixes, filters and tests).
/// Everything this engine cannot render is refused here, naming the construct and its line: unknown statements
/// (<c>extends include import call</c> ...), filters, tests, methods and functions.
/// </summary>
internal sealed class JinjaParser
{
    private static readonly HashSet<string> Globals = ["range", "namespace", "dict", "raise_exception", "strftime_now"];

    private readonly List<Token> _tokens;
    private int _pos;
    private int _loopDepth;
    private readonly HashSet<string> _macros = [];
    private readonly List<(string Name, int Line)> _calledNames = [];

    private JinjaParser(List<Token> tokens) => _tokens = tokens;

    public static List<Node> Parse(string source)
    {
        var parser = new JinjaParser(JinjaLexer.Tokenize(source));
        var nodes = parser.ParseBody([], out _);
        foreach (var (name, line) in parser._calledNames)
        {
            if (!Globals.Contains(name) && !parser._macros.Contains(name) && name != "caller")
            {
                throw new TemplateSyntaxException($"call of '{name}()', which is neither a macro of this template nor a global this engine has", line);
            }
        }
        return nodes;
    }

    private Token Peek => _tokens[_pos];

    private Token Next() => _tokens[_pos++];

    private bool IsName(string value) => Peek.Kind == TokenKind.Name && Peek.Value == value;

    private bool IsOp(string value) => Peek.Kind == TokenKind.Operator && Peek.Value == value;

    private bool AcceptName(string value)
    {
        if (!IsName(value)) return false;
        _pos++;
        return true;
    }

    private bool AcceptOp(string value)
    {
        if (!IsOp(value)) return false;
        _pos++;
        return true;
    }

    private TemplateSyntaxException Error(string message) => new(message, Peek.Line);

    private static string Describe(Token t) => t.Kind switch
    {
        TokenKind.End => "end of template",
        TokenKind.BlockEnd => "'%}'",
        TokenKind.VariableEnd => "'}}'",
        TokenKind.String => $"string '{t.Value}'",
        _ => $"'{t.Value}'",
    };

    private void ExpectOp(string value)
    {
        if (!AcceptOp(value)) throw Error($"expected '{value}', found {Describe(Peek)}");
    }

    private string ExpectName()
    {
        if (Peek.Kind != TokenKind.Name) throw Error($"expected a name, found {Describe(Peek)}");
        return Next().Value;
    }

    private void Expect(TokenKind kind)
    {
        if (Peek.Kind != kind) throw Error($"expected {(kind == TokenKind.BlockEnd ? "'%}'" : "'}}'")}, found {Describe(Peek)}");
        _pos++;
    }

    /// <summary>Nodes up to one of the <paramref name="ends"/> tags (its name consumed, returned in <paramref name="end"/>).</summary>
    private List<Node> ParseBody(string[] ends, out string end)
    {
        var nodes = new List<Node>();
        while (true)
        {
            var t = Next();
            switch (t.Kind)
            {
                case TokenKind.Text:
                    nodes.Add(new TextNode(t.Value, t.Line));
                    break;
                case TokenKind.VariableBegin:
                    nodes.Add(new OutputNode(ParseExpression(), t.Line));
                    Expect(TokenKind.VariableEnd);
                    break;
                case TokenKind.BlockBegin:
                    var name = ExpectName();
                    if (Array.IndexOf(ends, name) >= 0)
                    {
                        end = name;
                        return nodes;
                    }
                    nodes.Add(ParseStatement(name, t.Line));
                    break;
                case TokenKind.End:
                    if (ends.Length > 0) throw new TemplateSyntaxException($"missing '{{% {ends[^1]} %}}' before the end of the template", t.Line);
                    end = string.Empty;
                    return nodes;
                default:
                    throw new TemplateSyntaxException($"unexpected {Describe(t)}", t.Line);
            }
        }
    }

    private Node ParseStatement(string name, int line)
    {
        if (++_depth > Limits.MaxNesting) throw new TemplateSyntaxException("blocks nested too deeply", line);
        try
        {
            return ParseStatementInner(name, line);
        }
        finally
        {
            _depth--;
        }
    }

    private Node ParseStatementInner(string name, int line)
    {
        switch (name)
        {
            case "if": return ParseIf(line);
            case "for": return ParseFor(line);
            case "set": return ParseSet(line);
            case "macro": return ParseMacro(line);
            case "with":
                {
                    var bindings = new List<(string, Expr)>();
                    while (Peek.Kind != TokenKind.BlockEnd)
                    {
                        if (bindings.Count > 0) ExpectOp(",");
                        var n = ExpectName();
                        ExpectOp("=");
                        bindings.Add((n, ParseExpression()));
                    }
                    Expect(TokenKind.BlockEnd);
                    var body = ParseBody(["endwith"], out _);
                    Expect(TokenKind.BlockEnd);
                    return new WithNode(bindings, body, line);
                }
            case "filter":
                {
                    var filters = new List<FilterCall>();
                    do filters.Add(ParseFilterCall()); while (AcceptOp("|"));
                    Expect(TokenKind.BlockEnd);
                    var body = ParseBody(["endfilter"], out _);
                    Expect(TokenKind.BlockEnd);
                    return new FilterBlockNode(filters, body, line);
                }
            case "generation":
                {
                    Expect(TokenKind.BlockEnd);
                    var body = ParseBody(["endgeneration"], out _);
                    Expect(TokenKind.BlockEnd);
                    return new BlockNode(body, line);
                }
            case "call":
                {
                    if (Peek.Kind == TokenKind.Operator && Peek.Value == "(") throw Error("call blocks with caller arguments are not supported");
                    var callee = ParsePrimary();
                    while (IsOp(".")) { var l = Next().Line; callee = new GetAttrExpr(callee, ExpectName(), l); }
                    if (!IsOp("(")) throw Error("expected a macro call after 'call'");
                    var call = ParseCall(callee) as CallExpr ?? throw Error("expected a macro call after 'call'");
                    Expect(TokenKind.BlockEnd);
                    var body = ParseBody(["endcall"], out _);
                    Expect(TokenKind.BlockEnd);
                    return new CallBlockNode(call, body, line);
                }
            case "break" or "continue":
                if (_loopDepth == 0) throw new TemplateSyntaxException($"'{name}' outside a for loop", line);
                Expect(TokenKind.BlockEnd);
                return name == "break" ? new BreakNode(line) : new ContinueNode(line);
            default:
                throw new TemplateSyntaxException($"the statement '{{% {name} %}}' is not supported", line);
        }
    }

    private IfNode ParseIf(int line)
    {
        var branches = new List<(Expr?, List<Node>)>();
        Expr? cond = ParseExpression();
        while (true)
        {
            Expect(TokenKind.BlockEnd);
            var body = ParseBody(["elif", "else", "endif"], out var end);
            branches.Add((cond, body));
            switch (end)
            {
                case "endif":
                    Expect(TokenKind.BlockEnd);
                    return new IfNode(branches, line);
                case "elif":
                    cond = ParseExpression();
                    break;
                default:
                    Expect(TokenKind.BlockEnd);
                    var elseBody = ParseBody(["endif"], out _);
                    Expect(TokenKind.BlockEnd);
                    branches.Add((null, elseBody));
                    return new IfNode(branches, line);
            }
        }
    }

    private AssignTarget ParseTarget()
    {
        var paren = AcceptOp("(");
        var first = ParseSingleTarget();
        if (!IsOp(",") && !paren) return first;
        var list = new List<AssignTarget> { first };
        while (AcceptOp(","))
        {
            if (paren && IsOp(")")) break;
            list.Add(ParseSingleTarget());
        }
        if (paren) ExpectOp(")");
        return list.Count == 1 && !paren ? first : new AssignTarget(string.Empty, null, list);
    }

    private AssignTarget ParseSingleTarget()
    {
        var name = ExpectName();
        if (AcceptOp(".")) return new AssignTarget(name, ExpectName(), null);
        return AssignTarget.Of(name);
    }

    private ForNode ParseFor(int line)
    {
        var target = ParseTarget();
        if (!AcceptName("in")) throw Error($"expected 'in' in the for loop, found {Describe(Peek)}");
        var iterable = ParseTupleOr(withCondition: false);
        Expr? filter = AcceptName("if") ? ParseExpression() : null;
        if (IsName("recursive")) throw Error("recursive for loops are not supported");
        Expect(TokenKind.BlockEnd);
        _loopDepth++;
        var body = ParseBody(["endfor", "else"], out var end);
        _loopDepth--;
        List<Node>? elseBody = null;
        if (end == "else")
        {
            Expect(TokenKind.BlockEnd);
            elseBody = ParseBody(["endfor"], out _);
        }
        Expect(TokenKind.BlockEnd);
        return new ForNode(target, iterable, filter, body, elseBody, line);
    }

    private Node ParseSet(int line)
    {
        var target = ParseTarget();
        if (AcceptOp("="))
        {
            var value = ParseTupleOr(withCondition: true);
            Expect(TokenKind.BlockEnd);
            return new SetNode(target, value, line);
        }
        var filters = new List<FilterCall>();
        while (AcceptOp("|")) filters.Add(ParseFilterCall());
        Expect(TokenKind.BlockEnd);
        var body = ParseBody(["endset"], out _);
        Expect(TokenKind.BlockEnd);
        return new SetBlockNode(target, body, filters, line);
    }

    private MacroNode ParseMacro(int line)
    {
        var name = ExpectName();
        ExpectOp("(");
        var parameters = new List<(string, Expr?)>();
        while (!AcceptOp(")"))
        {
            if (parameters.Count > 0) ExpectOp(",");
            if (IsOp(")")) continue;
            var p = ExpectName();
            parameters.Add((p, AcceptOp("=") ? ParseExpression() : null));
        }
        Expect(TokenKind.BlockEnd);
        _macros.Add(name);
        var saved = _loopDepth;
        _loopDepth = 0;
        var body = ParseBody(["endmacro"], out _);
        _loopDepth = saved;
        if (Peek.Kind == TokenKind.Name) _pos++; // {% endmacro name %}
        Expect(TokenKind.BlockEnd);
        return new MacroNode(name, parameters, body, line);
    }

    /// <summary>An expression, or a tuple of them without parentheses (<c>a, b</c>), as a list.</summary>
    private Expr ParseTupleOr(bool withCondition)
    {
        var line = Peek.Line;
        var first = withCondition ? ParseExpression() : ParseOr();
        if (!IsOp(",")) return first;
        var items = new List<Expr> { first };
        while (AcceptOp(","))
        {
            if (Peek.Kind is TokenKind.BlockEnd or TokenKind.VariableEnd) break;
            items.Add(withCondition ? ParseExpression() : ParseOr());
        }
        return new ListExpr(items, line);
    }

    public Expr ParseExpression()
    {
        var e = ParseOr();
        while (IsName("if"))
        {
            var line = Next().Line;
            var cond = ParseOr();
            Expr? otherwise = AcceptName("else") ? ParseExpression() : null;
            e = new ConditionalExpr(cond, e, otherwise, line);
        }
        return e;
    }

    private Expr ParseOr()
    {
        var e = ParseAnd();
        while (IsName("or"))
        {
            var line = Next().Line;
            e = new BinaryExpr("or", e, ParseAnd(), line);
        }
        return e;
    }

    private Expr ParseAnd()
    {
        var e = ParseNot();
        while (IsName("and"))
        {
            var line = Next().Line;
            e = new BinaryExpr("and", e, ParseNot(), line);
        }
        return e;
    }

    private Expr ParseNot()
    {
        if (IsName("not"))
        {
            var line = Next().Line;
            if (++_depth > Limits.MaxNesting) throw Error("expressions nested too deeply");
            var operand = ParseNot();
            _depth--;
            return new UnaryExpr("not", operand, line);
        }
        return ParseCompare();
    }

    private Expr ParseCompare()
    {
        var line = Peek.Line;
        var e = ParseMath1();
        List<(string, Expr)>? ops = null;
        while (true)
        {
            string op;
            if (Peek.Kind == TokenKind.Operator && Peek.Value is "==" or "!=" or "<" or ">" or "<=" or ">=") op = Next().Value;
            else if (IsName("in")) { _pos++; op = "in"; }
            else if (IsName("not") && _tokens[_pos + 1] is { Kind: TokenKind.Name, Value: "in" }) { _pos += 2; op = "notin"; }
            else break;
            (ops ??= []).Add((op, ParseMath1()));
        }
        return ops is null ? e : new CompareExpr(e, ops, line);
    }

    private Expr ParseMath1()
    {
        var e = ParseConcat();
        while (Peek.Kind == TokenKind.Operator && Peek.Value is "+" or "-")
        {
            var t = Next();
            e = new BinaryExpr(t.Value, e, ParseConcat(), t.Line);
        }
        return e;
    }

    private Expr ParseConcat()
    {
        var e = ParseMath2();
        while (IsOp("~"))
        {
            var line = Next().Line;
            e = new BinaryExpr("~", e, ParseMath2(), line);
        }
        return e;
    }

    private Expr ParseMath2()
    {
        var e = ParsePow();
        while (Peek.Kind == TokenKind.Operator && Peek.Value is "*" or "/" or "//" or "%")
        {
            var t = Next();
            e = new BinaryExpr(t.Value, e, ParsePow(), t.Line);
        }
        return e;
    }

    private Expr ParsePow()
    {
        var e = ParseUnary(withFilter: true);
        while (IsOp("**"))
        {
            var line = Next().Line;
            e = new BinaryExpr("**", e, ParseUnary(withFilter: true), line);
        }
        return e;
    }

    private Expr ParseUnary(bool withFilter)
    {
        Expr e;
        if (IsOp("-") || IsOp("+"))
        {
            var t = Next();
            if (++_depth > Limits.MaxNesting) throw Error("expressions nested too deeply");
            e = new UnaryExpr(t.Value, ParseUnary(withFilter: false), t.Line);
            _depth--;
        }
        else
        {
            e = ParsePrimary();
        }
        e = ParsePostfix(e);
        return withFilter ? ParseFilterExpr(e) : e;
    }

    private int _depth;

    private Expr ParsePrimary()
    {
        if (++_depth > Limits.MaxNesting) throw Error("expressions nested too deeply");
        try
        {
            return ParsePrimaryInner();
        }
        finally
        {
            _depth--;
        }
    }

    private Expr ParsePrimaryInner()
    {
        var t = Next();
        switch (t.Kind)
        {
            case TokenKind.Name:
                return t.Value switch
                {
                    "true" or "True" => new LiteralExpr(true, t.Line),
                    "false" or "False" => new LiteralExpr(false, t.Line),
                    "none" or "None" => new LiteralExpr(null, t.Line),
                    _ => new NameExpr(t.Value, t.Line),
                };
            case TokenKind.String:
                {
                    var s = t.Value;
                    while (Peek.Kind == TokenKind.String) s += Next().Value;
                    return new LiteralExpr(s, t.Line);
                }
            case TokenKind.Integer:
                return new LiteralExpr(long.Parse(t.Value, CultureInfo.InvariantCulture), t.Line);
            case TokenKind.Float:
                return new LiteralExpr(double.Parse(t.Value, CultureInfo.InvariantCulture), t.Line);
            case TokenKind.Operator when t.Value == "(":
                {
                    if (AcceptOp(")")) return new ListExpr([], t.Line);
                    var first = ParseExpression();
                    if (AcceptOp(")")) return first;
                    var items = new List<Expr> { first };
                    while (AcceptOp(","))
                    {
                        if (IsOp(")")) break;
                        items.Add(ParseExpression());
                    }
                    ExpectOp(")");
                    return new ListExpr(items, t.Line);
                }
            case TokenKind.Operator when t.Value == "[":
                {
                    var items = new List<Expr>();
                    while (!AcceptOp("]"))
                    {
                        if (items.Count > 0) ExpectOp(",");
                        if (AcceptOp("]")) break;
                        items.Add(ParseExpression());
                    }
                    return new ListExpr(items, t.Line);
                }
            case TokenKind.Operator when t.Value == "{":
                {
                    var items = new List<(Expr, Expr)>();
                    while (!AcceptOp("}"))
                    {
                        if (items.Count > 0) ExpectOp(",");
                        if (AcceptOp("}")) break;
                        var key = ParseExpression();
                        ExpectOp(":");
                        items.Add((key, ParseExpression()));
                    }
                    return new DictExpr(items, t.Line);
                }
        }
        throw new TemplateSyntaxException($"unexpected {Describe(t)}", t.Line);
    }

    private Expr ParsePostfix(Expr e)
    {
        while (true)
        {
            if (IsOp("."))
            {
                var line = Next().Line;
                if (Peek.Kind == TokenKind.Integer) e = new GetItemExpr(e, new LiteralExpr(long.Parse(Next().Value, CultureInfo.InvariantCulture), line), line);
                else e = new GetAttrExpr(e, ExpectName(), line);
            }
            else if (IsOp("["))
            {
                var line = Next().Line;
                Expr? start = IsOp(":") ? null : ParseExpression();
                if (AcceptOp(":"))
                {
                    Expr? stop = IsOp("]") || IsOp(":") ? null : ParseExpression();
                    Expr? step = null;
                    if (AcceptOp(":") && !IsOp("]")) step = ParseExpression();
                    ExpectOp("]");
                    e = new SliceExpr(e, start, stop, step, line);
                }
                else
                {
                    ExpectOp("]");
                    e = new GetItemExpr(e, start!, line);
                }
            }
            else if (IsOp("("))
            {
                e = ParseCall(e);
            }
            else
            {
                return e;
            }
        }
    }

    private CallExpr ParseCall(Expr callee)
    {
        var line = Next().Line;
        var (args, kwargs) = ParseArguments();
        switch (callee)
        {
            case NameExpr n:
                _calledNames.Add((n.Name, line));
                break;
            case GetAttrExpr g:
                var loopMethod = g.Target is NameExpr { Name: "loop" } && g.Name is "cycle" or "changed";
                if (!loopMethod && !Builtins.IsKnownMethod(g.Name)) throw new TemplateSyntaxException($"the method '.{g.Name}()' is not supported", line);
                break;
        }
        return new CallExpr(callee, args, kwargs, line);
    }

    /// <summary>After "(": positional then <c>name=value</c> arguments up to ")".</summary>
    private (List<Expr> Args, List<(string, Expr)> Kwargs) ParseArguments()
    {
        var args = new List<Expr>();
        var kwargs = new List<(string, Expr)>();
        while (!AcceptOp(")"))
        {
            if (args.Count + kwargs.Count > 0) ExpectOp(",");
            if (AcceptOp(")")) break;
            if (IsOp("*"))
            {
                var line = Next().Line;
                args.Add(new SpreadExpr(ParseExpression(), line));
                continue;
            }
            if (IsOp("**"))
            {
                var line = Next().Line;
                kwargs.Add(("**", new SpreadExpr(ParseExpression(), line)));
                continue;
            }
            if (Peek.Kind == TokenKind.Name && _tokens[_pos + 1] is { Kind: TokenKind.Operator, Value: "=" })
            {
                var name = Next().Value;
                _pos++;
                kwargs.Add((name, ParseExpression()));
            }
            else
            {
                if (kwargs.Count > 0) throw Error("a positional argument follows a keyword argument");
                args.Add(ParseExpression());
            }
        }
        return (args, kwargs);
    }

    private FilterCall ParseFilterCall()
    {
        var line = Peek.Line;
        var name = ExpectName();
        while (AcceptOp(".")) name += "." + ExpectName();
        if (!Builtins.Filters.Contains(name)) throw new TemplateSyntaxException($"the filter '{name}' is not supported", line);
        if (AcceptOp("("))
        {
            var (args, kwargs) = ParseArguments();
            return new FilterCall(name, args, kwargs, line);
        }
        return new FilterCall(name, [], [], line);
    }

    private Expr ParseFilterExpr(Expr e)
    {
        while (true)
        {
            if (IsOp("|"))
            {
                var line = Next().Line;
                e = new FilterExpr(e, ParseFilterCall(), line);
            }
            else if (IsName("is"))
            {
                var line = Next().Line;
                var negated = AcceptName("not");
                var name = ExpectName();
                if (!Builtins.Tests.Contains(name)) throw new TemplateSyntaxException($"the test '{name}' is not supported", line);
                var args = new List<Expr>();
                if (IsOp("("))
                {
                    _pos++;
                    var (a, kw) = ParseArguments();
                    if (kw.Count > 0) throw new TemplateSyntaxException("keyword arguments to a test are not supported", line);
                    args = a;
                }
                else if ((Peek.Kind is TokenKind.String or TokenKind.Integer or TokenKind.Float
                          || Peek.Kind == TokenKind.Name && Peek.Value is not ("else" or "or" or "and")
                          || Peek.Kind == TokenKind.Operator && Peek.Value is "(" or "[" or "{"))
                {
                    if (IsName("is")) throw Error("tests cannot be chained with 'is'");
                    args.Add(ParsePostfix(ParsePrimary()));
                }
                e = new TestExpr(e, name, args, negated, line);
            }
            else if (IsOp("("))
            {
                e = ParseCall(e);
            }
            else
            {
                return e;
            }
        }
    }
}
