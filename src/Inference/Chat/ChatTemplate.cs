using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Serving.Inference.Chat;

/// <summary>One chat message as the template sees it.</summary>
public sealed record ChatMessage(string Role, string Content);

/// <summary>
/// Renders chat messages into a prompt with a Hugging Face chat template (<c>chat_template</c> in
/// <c>tokenizer_config.json</c>), interpreted by a small Jinja subset: <c>{{ expr }}</c>, <c>{% for x in xs %}</c>
/// (with <c>loop.index</c>, <c>index0</c>, <c>first</c>, <c>last</c>), <c>{% if %}/{% elif %}/{% else %}</c>,
/// <c>{% set x = expr %}</c>, comments, <c>-</c> whitespace control; expressions with literals, variables,
/// <c>.attr</c> and <c>['key']</c>/<c>[i]</c> access, <c>+</c> and <c>~</c>, comparisons, <c>and/or/not</c>,
/// <c>in</c>, <c>is (not) defined/none</c>, slices <c>xs[1:]</c>, filters <c>trim</c>, <c>length</c>, <c>upper</c>,
/// <c>lower</c>, string methods <c>strip/lstrip/rstrip/upper/lower/startswith/endswith/replace</c>, <c>dict.get</c>,
/// and <c>raise_exception(msg)</c>. Variables: <c>messages</c>, <c>add_generation_prompt</c>, <c>bos_token</c>, <c>eos_token</c>.
/// A checkpoint without a template gets <see cref="DefaultTemplate"/> (ChatML).
/// </summary>
public sealed class ChatTemplate
{
    /// <summary>ChatML, used when a checkpoint has no <c>chat_template</c>.</summary>
    public const string DefaultTemplate =
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}" +
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    private readonly List<Node> _nodes;

    /// <summary>Parses <paramref name="source"/>; throws <see cref="FormatException"/> on syntax outside the subset.</summary>
    public ChatTemplate(string source)
    {
        Source = source;
        _nodes = new Parser(Lexer.Tokenize(source)).ParseBody(out var end);
        if (end is not null) throw new FormatException($"chat template: unexpected '{{% {end} %}}'");
    }

    /// <summary>The template text.</summary>
    public string Source { get; }

    /// <summary>
    /// Reads <c>chat_template</c> from <c>tokenizer_config.json</c> in <paramref name="directory"/> (a string, or a list of
    /// named templates where "default" wins), or returns <see cref="DefaultTemplate"/>.
    /// </summary>
    public static ChatTemplate FromCheckpoint(string directory, out bool isDefault)
    {
        var path = Path.Combine(directory, "tokenizer_config.json");
        isDefault = true;
        if (File.Exists(path))
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            if (doc.RootElement.TryGetProperty("chat_template", out var t))
            {
                string? source = null;
                if (t.ValueKind == JsonValueKind.String)
                {
                    source = t.GetString();
                }
                else if (t.ValueKind == JsonValueKind.Array)
                {
                    foreach (var item in t.EnumerateArray())
                    {
                        if (item.TryGetProperty("template", out var tt) && (source is null || item.TryGetProperty("name", out var n) && n.GetString() == "default"))
                        {
                            source = tt.GetString();
                        }
                    }
                }
                if (!string.IsNullOrEmpty(source))
                {
                    isDefault = false;
                    return new ChatTemplate(source);
                }
            }
        }
        return new ChatTemplate(DefaultTemplate);
    }

    /// <summary>Renders the prompt for <paramref name="messages"/>.</summary>
    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt = true, string? bosToken = null, string? eosToken = null)
    {
        var list = new List<object?>(messages.Count);
        foreach (var m in messages)
        {
            list.Add(new Dictionary<string, object?> { ["role"] = m.Role, ["content"] = m.Content });
        }
        var scope = new Dictionary<string, object?>
        {
            ["messages"] = list,
            ["add_generation_prompt"] = addGenerationPrompt,
            ["bos_token"] = bosToken ?? string.Empty,
            ["eos_token"] = eosToken ?? string.Empty,
        };
        var sb = new StringBuilder();
        Execute(_nodes, scope, sb);
        return sb.ToString();
    }

    private static void Execute(List<Node> nodes, Dictionary<string, object?> scope, StringBuilder output)
    {
        foreach (var node in nodes)
        {
            switch (node)
            {
                case TextNode t:
                    output.Append(t.Text);
                    break;
                case OutputNode o:
                    output.Append(ToText(o.Expr.Eval(scope)));
                    break;
                case SetNode s:
                    scope[s.Name] = s.Expr.Eval(scope);
                    break;
                case IfNode i:
                    foreach (var (cond, body) in i.Branches)
                    {
                        if (cond is null || Truthy(cond.Eval(scope)))
                        {
                            Execute(body, scope, output);
                            break;
                        }
                    }
                    break;
                case ForNode f:
                    var items = f.Iterable.Eval(scope) switch
                    {
                        List<object?> l => l,
                        string str => str.Select(c => (object?)c.ToString()).ToList(),
                        null => [],
                        var other => throw new FormatException($"chat template: cannot iterate over {other.GetType().Name}"),
                    };
                    var saved = scope.TryGetValue(f.Variable, out var old) ? old : null;
                    var savedLoop = scope.TryGetValue("loop", out var oldLoop) ? oldLoop : null;
                    for (var k = 0; k < items.Count; k++)
                    {
                        scope[f.Variable] = items[k];
                        scope["loop"] = new Dictionary<string, object?>
                        {
                            ["index"] = (long)(k + 1), ["index0"] = (long)k, ["first"] = k == 0, ["last"] = k == items.Count - 1,
                            ["length"] = (long)items.Count,
                        };
                        Execute(f.Body, scope, output);
                    }
                    scope[f.Variable] = saved;
                    scope["loop"] = savedLoop;
                    break;
            }
        }
    }

    internal static bool Truthy(object? v) => v switch
    {
        null => false,
        bool b => b,
        string s => s.Length > 0,
        long n => n != 0,
        List<object?> l => l.Count > 0,
        Dictionary<string, object?> d => d.Count > 0,
        _ => true,
    };

    internal static string ToText(object? v) => v switch
    {
        null => string.Empty,
        bool b => b ? "True" : "False",
        long n => n.ToString(CultureInfo.InvariantCulture),
        string s => s,
        _ => v.ToString() ?? string.Empty,
    };

    // ---- syntax tree ----

    private abstract record Node;
    private sealed record TextNode(string Text) : Node;
    private sealed record OutputNode(Expr Expr) : Node;
    private sealed record SetNode(string Name, Expr Expr) : Node;
    private sealed record IfNode(List<(Expr? Cond, List<Node> Body)> Branches) : Node;
    private sealed record ForNode(string Variable, Expr Iterable, List<Node> Body) : Node;

    private abstract record Expr
    {
        public abstract object? Eval(Dictionary<string, object?> scope);
    }

    private sealed record Literal(object? Value) : Expr
    {
        public override object? Eval(Dictionary<string, object?> scope) => Value;
    }

    private sealed record Variable(string Name) : Expr
    {
        public override object? Eval(Dictionary<string, object?> scope) => scope.TryGetValue(Name, out var v) ? v : Undefined.Value;
    }

    /// <summary>Marks a missing variable or key, so <c>is defined</c> can tell it from none.</summary>
    private sealed class Undefined
    {
        public static readonly Undefined Value = new();
        public override string ToString() => string.Empty;
    }

    private sealed record Lookup(Expr Target, Expr Key) : Expr
    {
        public override object? Eval(Dictionary<string, object?> scope)
        {
            var t = Target.Eval(scope);
            var k = Key.Eval(scope);
            return (t, k) switch
            {
                (Dictionary<string, object?> d, string s) => d.TryGetValue(s, out var v) ? v : Undefined.Value,
                (List<object?> l, long i) => i < 0 ? (l.Count + i >= 0 ? l[(int)(l.Count + i)] : Undefined.Value) : i < l.Count ? l[(int)i] : Undefined.Value,
                (string s, long i) => i >= 0 && i < s.Length ? s[(int)i].ToString() : Undefined.Value,
                _ => Undefined.Value,
            };
        }
    }

    private sealed record Slice(Expr Target, Expr? Start, Expr? End) : Expr
    {
        public override object? Eval(Dictionary<string, object?> scope)
        {
            var t = Target.Eval(scope);
            var count = t switch { List<object?> l => l.Count, string str => str.Length, _ => throw new FormatException("chat template: only lists and strings can be sliced") };
            int Bound(Expr? e, int fallback)
            {
                if (e is null) return fallback;
                var v = e.Eval(scope) is long n ? (int)n : throw new FormatException("chat template: slice bounds must be integers");
                return Math.Clamp(v < 0 ? count + v : v, 0, count);
            }
            var from = Bound(Start, 0);
            var to = Math.Max(from, Bound(End, count));
            return t is List<object?> list ? list.GetRange(from, to - from) : ((string)t!)[from..to];
        }
    }

    private sealed record MethodCall(Expr Target, string Name, List<Expr> Args) : Expr
    {
        public override object? Eval(Dictionary<string, object?> scope)
        {
            var t = Target.Eval(scope);
            string Arg(int i) => i < Args.Count ? ToText(Args[i].Eval(scope)) : throw new FormatException($"chat template: {Name}() needs an argument");
            return (t, Name) switch
            {
                (string str, "strip") => Args.Count == 0 ? str.Trim() : str.Trim(Arg(0).ToCharArray()),
                (string str, "lstrip") => Args.Count == 0 ? str.TrimStart() : str.TrimStart(Arg(0).ToCharArray()),
                (string str, "rstrip") => Args.Count == 0 ? str.TrimEnd() : str.TrimEnd(Arg(0).ToCharArray()),
                (string str, "upper") => str.ToUpperInvariant(),
                (string str, "lower") => str.ToLowerInvariant(),
                (string str, "startswith") => str.StartsWith(Arg(0), StringComparison.Ordinal),
                (string str, "endswith") => str.EndsWith(Arg(0), StringComparison.Ordinal),
                (string str, "replace") => str.Replace(Arg(0), Arg(1), StringComparison.Ordinal),
                (Dictionary<string, object?> d, "get") => d.TryGetValue(Arg(0), out var v) ? v : Args.Count > 1 ? Args[1].Eval(scope) : null,
                _ => throw new FormatException($"chat template: method '{Name}' is not supported on {t?.GetType().Name ?? "none"}"),
            };
        }
    }

    private sealed record Unary(string Op, Expr Operand) : Expr
    {
        public override object? Eval(Dictionary<string, object?> scope) => Op switch
        {
            "not" => !Truthy(Operand.Eval(scope)),
            "-" => Operand.Eval(scope) is long n ? -n : throw new FormatException("chat template: unary minus needs a number"),
            _ => throw new FormatException($"chat template: unknown operator {Op}"),
        };
    }

    private sealed record Binary(string Op, Expr Left, Expr Right) : Expr
    {
        public override object? Eval(Dictionary<string, object?> scope)
        {
            switch (Op)
            {
                case "and": return Truthy(Left.Eval(scope)) && Truthy(Right.Eval(scope));
                case "or": return Truthy(Left.Eval(scope)) || Truthy(Right.Eval(scope));
            }
            var l = Left.Eval(scope);
            var r = Right.Eval(scope);
            return Op switch
            {
                "+" when l is long a && r is long b => a + b,
                "-" when l is long a && r is long b => a - b,
                "%" when l is long a && r is long b && b != 0 => a % b,
                "+" or "~" => ToText(l) + ToText(r),
                "==" => AreEqual(l, r),
                "!=" => !AreEqual(l, r),
                "<" or ">" or "<=" or ">=" when l is long a && r is long b => Op switch { "<" => a < b, ">" => a > b, "<=" => a <= b, _ => a >= b },
                "in" => r switch
                {
                    string s => s.Contains(ToText(l), StringComparison.Ordinal),
                    List<object?> list => list.Any(x => AreEqual(x, l)),
                    Dictionary<string, object?> d => l is string key && d.ContainsKey(key),
                    _ => false,
                },
                _ => throw new FormatException($"chat template: operator {Op} is not supported for these operands"),
            };
        }

        private static bool AreEqual(object? a, object? b) =>
            a is Undefined ? b is Undefined || b is null : Equals(a, b);
    }

    private sealed record Test(Expr Target, string Name, bool Negated) : Expr
    {
        public override object? Eval(Dictionary<string, object?> scope)
        {
            var v = Target.Eval(scope);
            var result = Name switch
            {
                "defined" => v is not Undefined,
                "none" => v is null,
                "string" => v is string,
                "number" => v is long,
                _ => throw new FormatException($"chat template: unknown test '{Name}'"),
            };
            return result != Negated;
        }
    }

    private sealed record Filter(Expr Target, string Name) : Expr
    {
        public override object? Eval(Dictionary<string, object?> scope)
        {
            var v = Target.Eval(scope);
            return Name switch
            {
                "trim" => ToText(v).Trim(),
                "upper" => ToText(v).ToUpperInvariant(),
                "lower" => ToText(v).ToLowerInvariant(),
                "length" => v switch { string s => (long)s.Length, List<object?> l => (long)l.Count, Dictionary<string, object?> d => (long)d.Count, _ => 0L },
                "string" => ToText(v),
                _ => throw new FormatException($"chat template: unknown filter '{Name}'"),
            };
        }
    }

    private sealed record Call(string Name, List<Expr> Args) : Expr
    {
        public override object? Eval(Dictionary<string, object?> scope) => Name switch
        {
            "raise_exception" => throw new ChatTemplateException(Args.Count > 0 ? ToText(Args[0].Eval(scope)) : "chat template raised an exception"),
            _ => throw new FormatException($"chat template: unknown function '{Name}'"),
        };
    }

    // ---- lexer ----

    private enum Kind { Text, Output, Statement }

    private sealed record Segment(Kind Kind, string Body);

    private static class Lexer
    {
        public static List<Segment> Tokenize(string src)
        {
            var segments = new List<Segment>();
            var i = 0;
            var trimNextLeading = false;
            while (i < src.Length)
            {
                var open = IndexOfOpen(src, i);
                var text = open < 0 ? src[i..] : src[i..open];
                if (trimNextLeading) text = text.TrimStart();
                trimNextLeading = false;
                if (open < 0)
                {
                    if (text.Length > 0) segments.Add(new Segment(Kind.Text, text));
                    break;
                }
                var kind = src[open + 1];
                var bodyStart = open + 2;
                var trimBefore = bodyStart < src.Length && src[bodyStart] == '-';
                if (trimBefore) text = text.TrimEnd();
                if (text.Length > 0) segments.Add(new Segment(Kind.Text, text));
                var close = kind switch { '{' => "}}", '%' => "%}", _ => "#}" };
                var end = src.IndexOf(close, bodyStart, StringComparison.Ordinal);
                if (end < 0) throw new FormatException($"chat template: unclosed '{src[open]}{kind}' at offset {open}");
                var body = src[(trimBefore ? bodyStart + 1 : bodyStart)..end];
                if (body.EndsWith('-'))
                {
                    body = body[..^1];
                    trimNextLeading = true;
                }
                if (kind == '{') segments.Add(new Segment(Kind.Output, body.Trim()));
                else if (kind == '%') segments.Add(new Segment(Kind.Statement, body.Trim()));
                i = end + 2;
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
    }

    // ---- parser ----

    private sealed class Parser(List<Segment> segments)
    {
        private int _pos;

        /// <summary>Parses nodes until a closing statement (returned in <paramref name="end"/>) or the end.</summary>
        public List<Node> ParseBody(out string? end)
        {
            var nodes = new List<Node>();
            while (_pos < segments.Count)
            {
                var seg = segments[_pos++];
                switch (seg.Kind)
                {
                    case Kind.Text:
                        nodes.Add(new TextNode(seg.Body));
                        break;
                    case Kind.Output:
                        nodes.Add(new OutputNode(ExpressionParser.Parse(seg.Body)));
                        break;
                    default:
                        var word = FirstWord(seg.Body);
                        switch (word)
                        {
                            case "for":
                                nodes.Add(ParseFor(seg.Body));
                                break;
                            case "if":
                                nodes.Add(ParseIf(seg.Body));
                                break;
                            case "set":
                                var eq = seg.Body.IndexOf('=', StringComparison.Ordinal);
                                if (eq < 0) throw new FormatException($"chat template: bad set '{seg.Body}'");
                                nodes.Add(new SetNode(seg.Body[3..eq].Trim(), ExpressionParser.Parse(seg.Body[(eq + 1)..])));
                                break;
                            case "endfor" or "endif" or "elif" or "else":
                                end = seg.Body;
                                return nodes;
                            default:
                                throw new FormatException($"chat template: unsupported statement '{{% {seg.Body} %}}'");
                        }
                        break;
                }
            }
            end = null;
            return nodes;
        }

        private ForNode ParseFor(string body)
        {
            var inAt = body.IndexOf(" in ", StringComparison.Ordinal);
            if (inAt < 0) throw new FormatException($"chat template: bad for '{body}'");
            var variable = body[3..inAt].Trim();
            var iterable = ExpressionParser.Parse(body[(inAt + 4)..]);
            var inner = ParseBody(out var end);
            if (end != "endfor") throw new FormatException("chat template: for without endfor");
            return new ForNode(variable, iterable, inner);
        }

        private IfNode ParseIf(string body)
        {
            var branches = new List<(Expr?, List<Node>)>();
            Expr? cond = ExpressionParser.Parse(body[2..]);
            while (true)
            {
                var inner = ParseBody(out var end);
                branches.Add((cond, inner));
                if (end is null) throw new FormatException("chat template: if without endif");
                var word = FirstWord(end);
                if (word == "endif") return new IfNode(branches);
                if (word == "elif") cond = ExpressionParser.Parse(end[4..]);
                else if (word == "else") cond = null;
                else throw new FormatException($"chat template: unexpected '{end}' in if");
            }
        }

        private static string FirstWord(string s)
        {
            var i = 0;
            while (i < s.Length && (char.IsLetter(s[i]) || s[i] == '_')) i++;
            return s[..i];
        }
    }

    private sealed class ExpressionParser
    {
        private readonly List<string> _tokens;
        private int _pos;

        private ExpressionParser(List<string> tokens) => _tokens = tokens;

        public static Expr Parse(string text)
        {
            var p = new ExpressionParser(Lex(text));
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

        private static List<string> Lex(string s)
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
                else if ("+-~|.[](),<>%:".Contains(c))
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
}

/// <summary>The chat template rejected the messages (its <c>raise_exception</c>), e.g. roles out of order.</summary>
public sealed class ChatTemplateException(string message) : Exception(message);
