namespace Serving.Inference.Chat.Jinja;

// The syntax tree: statements (Node) and expressions (Expr). An expression evaluates itself against the scope.

internal abstract record Node;
internal sealed record TextNode(string Text) : Node;
internal sealed record OutputNode(Expr Expr) : Node;
internal sealed record SetNode(string Name, Expr Expr) : Node;
internal sealed record IfNode(List<(Expr? Cond, List<Node> Body)> Branches) : Node;
internal sealed record ForNode(string Variable, Expr Iterable, List<Node> Body) : Node;

internal abstract record Expr
{
    public abstract object? Eval(Dictionary<string, object?> scope);
}

internal sealed record Literal(object? Value) : Expr
{
    public override object? Eval(Dictionary<string, object?> scope) => Value;
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

internal sealed record Slice(Expr Target, Expr? Start, Expr? End) : Expr
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
            (string str, "startswith") => str.StartsWith(Arg(0), StringComparison.Ordinal),
            (string str, "endswith") => str.EndsWith(Arg(0), StringComparison.Ordinal),
            (string str, "replace") => str.Replace(Arg(0), Arg(1), StringComparison.Ordinal),
            (Dictionary<string, object?> d, "get") => d.TryGetValue(Arg(0), out var v) ? v : Args.Count > 1 ? Args[1].Eval(scope) : null,
            _ => throw new FormatException($"chat template: method '{Name}' is not supported on {t?.GetType().Name ?? "none"}"),
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
            "%" when l is long a && r is long b && b != 0 => a % b,
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
            _ => throw new FormatException($"chat template: operator {Op} is not supported for these operands"),
        };
    }

    private static bool AreEqual(object? a, object? b) =>
        a is Undefined ? b is Undefined || b is null : Equals(a, b);
}

internal sealed record Test(Expr Target, string Name, bool Negated) : Expr
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

internal sealed record Filter(Expr Target, string Name) : Expr
{
    public override object? Eval(Dictionary<string, object?> scope)
    {
        var v = Target.Eval(scope);
        return Name switch
        {
            "trim" => JinjaEvaluator.ToText(v).Trim(),
            "upper" => JinjaEvaluator.ToText(v).ToUpperInvariant(),
            "lower" => JinjaEvaluator.ToText(v).ToLowerInvariant(),
            "length" => v switch { string s => (long)s.Length, List<object?> l => (long)l.Count, Dictionary<string, object?> d => (long)d.Count, _ => 0L },
            "string" => JinjaEvaluator.ToText(v),
            _ => throw new FormatException($"chat template: unknown filter '{Name}'"),
        };
    }
}

internal sealed record Call(string Name, List<Expr> Args) : Expr
{
    public override object? Eval(Dictionary<string, object?> scope) => Name switch
    {
        "raise_exception" => throw new ChatTemplateException(Args.Count > 0 ? JinjaEvaluator.ToText(Args[0].Eval(scope)) : "chat template raised an exception"),
        _ => throw new FormatException($"chat template: unknown function '{Name}'"),
    };
}
