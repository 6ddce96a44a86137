namespace Serving.Inference.Chat.Jinja;

// The syntax tree: statements (Node) and expressions (Expr). An expression evaluates itself against the scope.

internal abstract record Node;
internal sealed record TextNode(string Text) : Node;
internal sealed record OutputNode(Expr Expr) : Node;

/// <summary><c>{% set name = expr %}</c>, or <c>{% set name.attr = expr %}</c> on a namespace.</summary>
internal sealed record SetNode(string Name, string? Attribute, Expr Expr) : Node;
internal sealed record IfNode(List<(Expr? Cond, List<Node> Body)> Branches) : Node;

/// <summary><c>{% for a in xs %}</c> or <c>{% for k, v in pairs %}</c> (each item unpacked into the names).</summary>
internal sealed record ForNode(List<string> Variables, Expr Iterable, List<Node> Body) : Node;

/// <summary>A callable global (<c>raise_exception</c>, <c>namespace</c>, <c>strftime_now</c>, <c>range</c>).</summary>
internal delegate object? JinjaFunction(List<object?> args, Dictionary<string, object?> kwargs);

/// <summary>The object <c>namespace(...)</c> returns: attributes a loop body can assign and the outside can read.</summary>
internal sealed class JinjaNamespace : Dictionary<string, object?>;

internal abstract record Expr
{
    public abstract object? Eval(Dictionary<string, object?> scope);
}

internal sealed record Literal(object? Value) : Expr
{
    public override object? Eval(Dictionary<string, object?> scope) => Value;
}

internal sealed record ListLiteral(List<Expr> Items) : Expr
{
    public override object? Eval(Dictionary<string, object?> scope) => Items.Select(i => i.Eval(scope)).ToList();
}

internal sealed record Variable(string Name) : Expr
{
    public override object? Eval(Dictionary<string, object?> scope) => scope.TryGetValue(Name, out var v) ? v : Undefined.Value;
}

/// <summary>Marks a missing variable or key, so <c>is defined</c> can tell it from none.</summary>
internal sealed class Undefined
{
    public static readonly Undefined Value = new();
    public override string ToString() => string.Empty;
}

internal sealed record Lookup(Expr Target, Expr Key) : Expr
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

/// <summary><c>xs[start:end:step]</c> on lists and strings, with Python's bounds (negative step walks backwards).</summary>
internal sealed record Slice(Expr Target, Expr? Start, Expr? End, Expr? Step) : Expr
{
    public override object? Eval(Dictionary<string, object?> scope)
    {
        var t = Target.Eval(scope);
        var items = t switch
        {
            List<object?> l => l,
            string str => str.Select(c => (object?)c.ToString()).ToList(),
            _ => throw new FormatException("chat template: only lists and strings can be sliced"),
        };
        var count = items.Count;
        long? Value(Expr? e) => e is null ? null : e.Eval(scope) is long n ? n : throw new FormatException("chat template: slice bounds must be integers");
        var step = Value(Step) ?? 1;
        if (step == 0) throw new FormatException("chat template: slice step cannot be zero");
        var result = new List<object?>();
        if (step > 0)
        {
            var from = Clamp(Value(Start) ?? 0, count, 0, count);
            var to = Clamp(Value(End) ?? count, count, 0, count);
            for (var i = from; i < to; i += step) result.Add(items[(int)i]);
        }
        else
        {
            var from = Clamp(Value(Start) ?? count - 1, count, -1, count - 1);
            var to = Value(End) is { } e ? Clamp(e, count, -1, count - 1) : -1;
            for (var i = from; i > to; i += step) result.Add(items[(int)i]);
        }
        return t is string ? string.Concat(result.Select(x => (string)x!)) : result;
    }

    private static long Clamp(long v, int count, long lo, long hi) => Math.Clamp(v < 0 ? count + v : v, lo, hi);
}

internal sealed record MethodCall(Expr Target, string Name, List<Expr> Args) : Expr
{
    public override object? Eval(Dictionary<string, object?> scope)
    {
        var t = Target.Eval(scope);
        string Arg(int i) => i < Args.Count ? JinjaEvaluator.ToText(Args[i].Eval(scope)) : throw new FormatException($"chat template: {Name}() needs an argument");
        return (t, Name) switch
        {
            (string str, "strip") => Args.Count == 0 ? str.Trim() : str.Trim(Arg(0).ToCharArray()),
            (string str, "lstrip") => Args.Count == 0 ? str.TrimStart() : str.TrimStart(Arg(0).ToCharArray()),
            (string str, "rstrip") => Args.Count == 0 ? str.TrimEnd() : str.TrimEnd(Arg(0).ToCharArray()),
            (string str, "upper") => str.ToUpperInvariant(),
            (string str, "lower") => str.ToLowerInvariant(),
            (string str, "title") => JinjaEvaluator.Title(str),
            (string str, "capitalize") => JinjaEvaluator.Capitalize(str),
            (string str, "startswith") => str.StartsWith(Arg(0), StringComparison.Ordinal),
            (string str, "endswith") => str.EndsWith(Arg(0), StringComparison.Ordinal),
            (string str, "replace") => str.Replace(Arg(0), Arg(1), StringComparison.Ordinal),
            (string str, "split") => Args.Count == 0
                ? str.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).Select(x => (object?)x).ToList()
                : str.Split(Arg(0)).Select(x => (object?)x).ToList(),
            (Dictionary<string, object?> d, "get") => d.TryGetValue(Arg(0), out var v) ? v : Args.Count > 1 ? Args[1].Eval(scope) : null,
            (Dictionary<string, object?> d, "items") => JinjaEvaluator.Items(d),
            (Dictionary<string, object?> d, "keys") => d.Keys.Select(k => (object?)k).ToList(),
            (Dictionary<string, object?> d, "values") => d.Values.ToList(),
            _ => throw new FormatException($"chat template: method '{Name}' is not supported on {JinjaEvaluator.TypeName(t)}"),
        };
    }
}

internal sealed record Unary(string Op, Expr Operand) : Expr
{
    public override object? Eval(Dictionary<string, object?> scope) => Op switch
    {
        "not" => !JinjaEvaluator.Truthy(Operand.Eval(scope)),
        "-" => Operand.Eval(scope) is long n ? -n : throw new FormatException("chat template: unary minus needs a number"),
        _ => throw new FormatException($"chat template: unknown operator {Op}"),
    };
}

internal sealed record Binary(string Op, Expr Left, Expr Right) : Expr
{
    public override object? Eval(Dictionary<string, object?> scope)
    {
        switch (Op)
        {
            case "and": return JinjaEvaluator.Truthy(Left.Eval(scope)) && JinjaEvaluator.Truthy(Right.Eval(scope));
            case "or": return JinjaEvaluator.Truthy(Left.Eval(scope)) || JinjaEvaluator.Truthy(Right.Eval(scope));
        }
        var l = Left.Eval(scope);
        var r = Right.Eval(scope);
        return Op switch
        {
            "+" when l is long a && r is long b => a + b,
            "-" when l is long a && r is long b => a - b,
            "*" when l is long a && r is long b => a * b,
            "%" when l is long a && r is long b && b != 0 => a % b,
            "+" when l is List<object?> a && r is List<object?> b => a.Concat(b).ToList(),
            "+" or "~" => JinjaEvaluator.ToText(l) + JinjaEvaluator.ToText(r),
            "==" => AreEqual(l, r),
            "!=" => !AreEqual(l, r),
            "<" or ">" or "<=" or ">=" when l is long a && r is long b => Op switch { "<" => a < b, ">" => a > b, "<=" => a <= b, _ => a >= b },
            "in" => r switch
            {
                string s => s.Contains(JinjaEvaluator.ToText(l), StringComparison.Ordinal),
                List<object?> list => list.Any(x => AreEqual(x, l)),
                Dictionary<string, object?> d => l is string key && d.ContainsKey(key),
                _ => false,
            },
            _ => throw new FormatException($"chat template: operator {Op} is not supported for {JinjaEvaluator.TypeName(l)} and {JinjaEvaluator.TypeName(r)}"),
        };
    }

    internal static bool AreEqual(object? a, object? b) =>
        a is Undefined ? b is Undefined || b is null : Equals(a, b);
}

/// <summary><c>then if cond else otherwise</c> (the else part optional: undefined when absent).</summary>
internal sealed record Conditional(Expr Cond, Expr Then, Expr? Else) : Expr
{
    public override object? Eval(Dictionary<string, object?> scope) =>
        JinjaEvaluator.Truthy(Cond.Eval(scope)) ? Then.Eval(scope) : Else is null ? Undefined.Value : Else.Eval(scope);
}

internal sealed record Test(Expr Target, string Name, bool Negated, List<Expr> Args) : Expr
{
    public override object? Eval(Dictionary<string, object?> scope)
    {
        var v = Target.Eval(scope);
        var result = Name switch
        {
            "defined" => v is not Undefined,
            "undefined" => v is Undefined,
            "none" => v is null,
            "string" => v is string,
            "number" => v is long or double,
            "integer" => v is long,
            "float" => v is double,
            "boolean" => v is bool,
            "true" => v is true,
            "false" => v is false,
            "mapping" => v is Dictionary<string, object?>,
            "sequence" => v is List<object?> or string,
            "iterable" => v is List<object?> or string or Dictionary<string, object?>,
            "callable" => v is JinjaFunction,
            "even" => v is long n && n % 2 == 0,
            "odd" => v is long n && n % 2 != 0,
            "equalto" or "eq" or "sameas" => Args.Count == 1 ? Binary.AreEqual(v, Args[0].Eval(scope)) : throw new FormatException($"chat template: test '{Name}' takes one argument"),
            _ => throw new FormatException($"chat template: unknown test '{Name}'"),
        };
        return result != Negated;
    }
}

internal sealed record Filter(Expr Target, string Name, List<Expr> Args, Dictionary<string, Expr> Kwargs) : Expr
{
    public override object? Eval(Dictionary<string, object?> scope)
    {
        var v = Target.Eval(scope);
        object? Arg(int i, object? fallback = null) => i < Args.Count ? Args[i].Eval(scope) : fallback;
        return Name switch
        {
            "trim" => JinjaEvaluator.ToText(v).Trim(),
            "upper" => JinjaEvaluator.ToText(v).ToUpperInvariant(),
            "lower" => JinjaEvaluator.ToText(v).ToLowerInvariant(),
            "title" => JinjaEvaluator.Title(JinjaEvaluator.ToText(v)),
            "capitalize" => JinjaEvaluator.Capitalize(JinjaEvaluator.ToText(v)),
            "length" or "count" => v switch { string s => (long)s.Length, List<object?> l => (long)l.Count, Dictionary<string, object?> d => (long)d.Count, _ => 0L },
            "string" => JinjaEvaluator.ToText(v),
            "safe" => v,
            "list" => JinjaEvaluator.Iterate(v),
            "first" => JinjaEvaluator.Iterate(v) is { Count: > 0 } f ? f[0] : Undefined.Value,
            "last" => JinjaEvaluator.Iterate(v) is { Count: > 0 } f ? f[^1] : Undefined.Value,
            "reverse" => v is string s ? new string(s.Reverse().ToArray()) : Enumerable.Reverse(JinjaEvaluator.Iterate(v)).ToList(),
            "items" => v is Dictionary<string, object?> d ? JinjaEvaluator.Items(d) : throw new FormatException($"chat template: items needs a mapping, got {JinjaEvaluator.TypeName(v)}"),
            "join" => string.Join(JinjaEvaluator.ToText(Arg(0, "")), JinjaEvaluator.Iterate(v).Select(JinjaEvaluator.ToText)),
            "default" or "d" => v is Undefined || (JinjaEvaluator.Truthy(Arg(1, false)) && !JinjaEvaluator.Truthy(v)) ? Arg(0, "") : v,
            "replace" => JinjaEvaluator.ToText(v).Replace(JinjaEvaluator.ToText(Arg(0)), JinjaEvaluator.ToText(Arg(1)), StringComparison.Ordinal),
            "select" or "reject" => SelectOrReject(v, scope),
            "tojson" => JinjaEvaluator.ToJson(v, Kwargs.TryGetValue("indent", out var indent) ? indent.Eval(scope) as long? : null),
            _ => throw new FormatException($"chat template: unknown filter '{Name}'"),
        };
    }

    private List<object?> SelectOrReject(object? v, Dictionary<string, object?> scope)
    {
        if (Args.Count == 0) return JinjaEvaluator.Iterate(v).Where(x => JinjaEvaluator.Truthy(x) == (Name == "select")).ToList();
        var test = JinjaEvaluator.ToText(Args[0].Eval(scope));
        var testArgs = Args.Skip(1).ToList();
        var keep = Name == "select";
        return JinjaEvaluator.Iterate(v)
            .Where(x => (bool)new Test(new Literal(x), test, Negated: false, testArgs).Eval(scope)! == keep)
            .ToList();
    }
}

/// <summary>A call of a global: <c>name(args, key=value)</c>.</summary>
internal sealed record Call(string Name, List<Expr> Args, Dictionary<string, Expr> Kwargs) : Expr
{
    public override object? Eval(Dictionary<string, object?> scope)
    {
        if (!scope.TryGetValue(Name, out var f) || f is not JinjaFunction function)
        {
            throw new FormatException($"chat template: unknown function '{Name}'");
        }
        return function(Args.Select(a => a.Eval(scope)).ToList(), Kwargs.ToDictionary(k => k.Key, k => k.Value.Eval(scope)));
    }
}
