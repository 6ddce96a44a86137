namespace Serving.Inference.Chat.Jinja;

// The syntax tree. Statements (Node) run against a Frame and write to its output; expressions (Expr) evaluate to
// values: null (None), bool, long, double, string, List<object?>, Dictionary<string, object?>, Undefined,
// JinjaNamespace, JinjaMacro, JinjaFunction, LoopContext.

internal abstract class Node(int line)
{
    public int Line { get; } = line;
}

internal sealed class TextNode(string text, int line) : Node(line)
{
    public string Text { get; } = text;
}

internal sealed class OutputNode(Expr expr, int line) : Node(line)
{
    public Expr Expr { get; } = expr;
}

/// <summary>Where a <c>set</c> or <c>for</c> stores: one name, <c>ns.attr</c>, or a tuple of names.</summary>
internal sealed record AssignTarget(string Name, string? Attribute, List<AssignTarget>? Tuple)
{
    public static AssignTarget Of(string name) => new(name, null, null);
}

internal sealed class SetNode(AssignTarget target, Expr value, int line) : Node(line)
{
    public AssignTarget Target { get; } = target;
    public Expr Value { get; } = value;
}

/// <summary><c>{% set x %}...{% endset %}</c> (optionally through filters).</summary>
internal sealed class SetBlockNode(AssignTarget target, List<Node> body, List<FilterCall> filters, int line) : Node(line)
{
    public AssignTarget Target { get; } = target;
    public List<Node> Body { get; } = body;
    public List<FilterCall> Filters { get; } = filters;
}

internal sealed class IfNode(List<(Expr? Cond, List<Node> Body)> branches, int line) : Node(line)
{
    public List<(Expr? Cond, List<Node> Body)> Branches { get; } = branches;
}

internal sealed class ForNode(AssignTarget target, Expr iterable, Expr? filter, List<Node> body, List<Node>? elseBody, int line) : Node(line)
{
    public AssignTarget Target { get; } = target;
    public Expr Iterable { get; } = iterable;
    public Expr? Filter { get; } = filter;
    public List<Node> Body { get; } = body;
    public List<Node>? Else { get; } = elseBody;
}

internal sealed class MacroNode(string name, List<(string Name, Expr? Default)> parameters, List<Node> body, int line) : Node(line)
{
    public string Name { get; } = name;
    public List<(string Name, Expr? Default)> Parameters { get; } = parameters;
    public List<Node> Body { get; } = body;
}

/// <summary><c>{% with a = 1 %}...{% endwith %}</c>: a scope with its own names.</summary>
internal sealed class WithNode(List<(string Name, Expr Value)> bindings, List<Node> body, int line) : Node(line)
{
    public List<(string Name, Expr Value)> Bindings { get; } = bindings;
    public List<Node> Body { get; } = body;
}

/// <summary><c>{% filter upper %}...{% endfilter %}</c>.</summary>
internal sealed class FilterBlockNode(List<FilterCall> filters, List<Node> body, int line) : Node(line)
{
    public List<FilterCall> Filters { get; } = filters;
    public List<Node> Body { get; } = body;
}

/// <summary>transformers' <c>{% generation %}</c> (marks assistant text for masks; renders its body unchanged).</summary>
internal sealed class BlockNode(List<Node> body, int line) : Node(line)
{
    public List<Node> Body { get; } = body;
}

/// <summary><c>{% call macro(args) %}body{% endcall %}</c>: the macro runs with <c>caller()</c> rendering the body.</summary>
internal sealed class CallBlockNode(CallExpr call, List<Node> body, int line) : Node(line)
{
    public CallExpr Call { get; } = call;
    public List<Node> Body { get; } = body;
}

internal sealed class BreakNode(int line) : Node(line);

internal sealed class ContinueNode(int line) : Node(line);

/// <summary>A filter with its arguments, as <c>x|name(args)</c> applies it.</summary>
internal sealed record FilterCall(string Name, List<Expr> Args, List<(string Name, Expr Value)> Kwargs, int Line);

internal abstract class Expr(int line)
{
    public int Line { get; } = line;
    public abstract object? Eval(Frame frame);
}

internal sealed class LiteralExpr(object? value, int line) : Expr(line)
{
    public object? Value { get; } = value;
    public override object? Eval(Frame frame) => Value;
}

internal sealed class ListExpr(List<Expr> items, int line) : Expr(line)
{
    public override object? Eval(Frame frame)
    {
        var list = new List<object?>(items.Count);
        foreach (var i in items) list.Add(i.Eval(frame));
        return list;
    }
}

internal sealed class DictExpr(List<(Expr Key, Expr Value)> items, int line) : Expr(line)
{
    public override object? Eval(Frame frame)
    {
        var d = new Dictionary<string, object?>(items.Count);
        foreach (var (k, v) in items)
        {
            d[Py.Key(k.Eval(frame), Line)] = v.Eval(frame);
        }
        return d;
    }
}

internal sealed class NameExpr(string name, int line) : Expr(line)
{
    public string Name { get; } = name;
    public override object? Eval(Frame frame) => frame.Lookup(Name);
}

internal sealed class GetAttrExpr(Expr target, string name, int line) : Expr(line)
{
    public Expr Target { get; } = target;
    public string Name { get; } = name;
    public override object? Eval(Frame frame) => Py.GetAttr(Target.Eval(frame), Name, Line);
}

internal sealed class GetItemExpr(Expr target, Expr key, int line) : Expr(line)
{
    public override object? Eval(Frame frame) => Py.GetItem(target.Eval(frame), key.Eval(frame), Line);
}

internal sealed class SliceExpr(Expr target, Expr? start, Expr? stop, Expr? step, int line) : Expr(line)
{
    public override object? Eval(Frame frame) =>
        Py.Slice(target.Eval(frame), start?.Eval(frame), stop?.Eval(frame), step?.Eval(frame), Line);
}

internal sealed class UnaryExpr(string op, Expr operand, int line) : Expr(line)
{
    public override object? Eval(Frame frame)
    {
        var v = operand.Eval(frame);
        return op switch
        {
            "not" => !Py.Truthy(v),
            "-" => v switch
            {
                long n => (object)(-n),
                double d => -d,
                bool b => b ? -1L : 0L,
                _ => throw new ChatTemplateRenderException($"bad operand type for unary -: {Py.TypeName(v)}", Line),
            },
            _ => v is long or double or bool ? v : throw new ChatTemplateRenderException($"bad operand type for unary +: {Py.TypeName(v)}", Line),
        };
    }
}

internal sealed class BinaryExpr(string op, Expr left, Expr right, int line) : Expr(line)
{
    public override object? Eval(Frame frame)
    {
        switch (op)
        {
            case "and":
                {
                    var l = left.Eval(frame);
                    return Py.Truthy(l) ? right.Eval(frame) : l;
                }
            case "or":
                {
                    var l = left.Eval(frame);
                    return Py.Truthy(l) ? l : right.Eval(frame);
                }
        }
        return Py.Binary(op, left.Eval(frame), right.Eval(frame), Line);
    }
}

/// <summary>A comparison chain <c>a &lt; b &lt;= c</c> (Python semantics: each pair, short-circuit).</summary>
internal sealed class CompareExpr(Expr first, List<(string Op, Expr Right)> rest, int line) : Expr(line)
{
    public override object? Eval(Frame frame)
    {
        var l = first.Eval(frame);
        foreach (var (op, rightExpr) in rest)
        {
            var r = rightExpr.Eval(frame);
            if (!Py.Compare(op, l, r, Line)) return false;
            l = r;
        }
        return true;
    }
}

internal sealed class ConditionalExpr(Expr cond, Expr then, Expr? otherwise, int line) : Expr(line)
{
    public override object? Eval(Frame frame) =>
        Py.Truthy(cond.Eval(frame)) ? then.Eval(frame) : otherwise is null ? Undefined.Instance : otherwise.Eval(frame);
}

internal sealed class TestExpr(Expr target, string name, List<Expr> args, bool negated, int line) : Expr(line)
{
    public override object? Eval(Frame frame)
    {
        var v = target.Eval(frame);
        var a = new List<object?>(args.Count);
        foreach (var x in args) a.Add(x.Eval(frame));
        return Builtins.Test(name, v, a, Line) != negated;
    }
}

internal sealed class FilterExpr(Expr target, FilterCall filter, int line) : Expr(line)
{
    public override object? Eval(Frame frame) => Builtins.Filter(filter, target.Eval(frame), frame);
}

/// <summary><c>*xs</c> in a call's arguments (its items become positional arguments), or <c>**d</c> under the name "**".</summary>
internal sealed class SpreadExpr(Expr inner, int line) : Expr(line)
{
    public override object? Eval(Frame frame) => inner.Eval(frame);
}

/// <summary>A call: of a method (<c>x.strip()</c>), a macro, or a global (<c>range</c>, <c>namespace</c>, ...).</summary>
internal sealed class CallExpr(Expr callee, List<Expr> args, List<(string Name, Expr Value)> kwargs, int line) : Expr(line)
{
    public List<Expr> Args => args;
    public List<(string Name, Expr Value)> Kwargs => kwargs;

    public override object? Eval(Frame frame)
    {
        var a = new List<object?>(args.Count);
        foreach (var x in args)
        {
            if (x is SpreadExpr) a.AddRange(Py.Iterate(x.Eval(frame), Line));
            else a.Add(x.Eval(frame));
        }
        Dictionary<string, object?>? kw = null;
        if (kwargs.Count > 0)
        {
            kw = new Dictionary<string, object?>(kwargs.Count);
            foreach (var (k, v) in kwargs)
            {
                if (k != "**") kw[k] = v.Eval(frame);
                else if (v.Eval(frame) is Dictionary<string, object?> d) foreach (var (dk, dv) in d) kw[dk] = dv;
                else throw new ChatTemplateRenderException("argument after ** must be a mapping", Line);
            }
        }
        return Call(frame, a, kw);
    }

    /// <summary>The call with evaluated arguments (a call block adds <c>caller</c> to <paramref name="kw"/>).</summary>
    public object? Call(Frame frame, List<object?> a, Dictionary<string, object?>? kw)
    {
        if (callee is GetAttrExpr g)
        {
            var target = g.Target.Eval(frame);
            if (Builtins.TryMethod(target, g.Name, a, kw, Line, out var result)) return result;
            return Invoke(Py.GetAttr(target, g.Name, Line), a, kw, frame);
        }
        return Invoke(callee.Eval(frame), a, kw, frame);
    }

    private object? Invoke(object? f, List<object?> a, Dictionary<string, object?>? kw, Frame frame) => f switch
    {
        JinjaFunction fn => fn(a, kw ?? Builtins.NoKwargs, Line),
        JinjaMacro m => m.Call(a, kw, frame, Line),
        Undefined => throw new ChatTemplateRenderException("an undefined value is not callable", Line),
        _ => throw new ChatTemplateRenderException($"'{Py.TypeName(f)}' object is not callable", Line),
    };
}
