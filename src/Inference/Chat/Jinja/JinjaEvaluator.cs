using System.Text;

namespace Serving.Inference.Chat.Jinja;

/// <summary>What a statement tells the loop around it.</summary>
internal enum Flow { Normal, Break, Continue }

/// <summary>
/// Runs the statement tree against a frame, writing to the output. Scoping as Jinja's: a for loop, a macro call and a
/// <c>with</c> block have their own scope (what they set is gone afterwards; a namespace's attributes, being one shared
/// object, are how a template carries values out); <c>if</c> has none.
/// </summary>
internal static class JinjaEvaluator
{
    public static Flow Execute(List<Node> nodes, Frame frame, StringBuilder output)
    {
        foreach (var node in nodes)
        {
            switch (node)
            {
                case TextNode t:
                    output.Append(t.Text);
                    break;
                case OutputNode o:
                    var v = o.Expr.Eval(frame);
                    if (v is string s) output.Append(s);
                    else output.Append(Py.Str(v));
                    break;
                case IfNode i:
                    foreach (var (cond, body) in i.Branches)
                    {
                        if (cond is null || Py.Truthy(cond.Eval(frame)))
                        {
                            var flow = Execute(body, frame, output);
                            if (flow != Flow.Normal) return flow;
                            break;
                        }
                    }
                    break;
                case ForNode f:
                    RunFor(f, frame, output);
                    break;
                case SetNode set:
                    Assign(set.Target, set.Value.Eval(frame), frame, set.Line);
                    break;
                case SetBlockNode sb:
                    {
                        var text = new StringBuilder();
                        Execute(sb.Body, new Frame(frame), text);
                        object? value = text.ToString();
                        foreach (var filter in sb.Filters) value = Builtins.Filter(filter, value, frame);
                        Assign(sb.Target, value, frame, sb.Line);
                        break;
                    }
                case MacroNode m:
                    frame.Set(m.Name, new JinjaMacro(m, frame));
                    break;
                case WithNode w:
                    {
                        var inner = new Frame(frame);
                        foreach (var (name, value) in w.Bindings) inner.Set(name, value.Eval(frame));
                        var flow = Execute(w.Body, inner, output);
                        if (flow != Flow.Normal) return flow;
                        break;
                    }
                case FilterBlockNode fb:
                    {
                        var text = new StringBuilder();
                        Execute(fb.Body, new Frame(frame), text);
                        object? value = text.ToString();
                        foreach (var filter in fb.Filters) value = Builtins.Filter(filter, value, frame);
                        output.Append(Py.Str(value));
                        break;
                    }
                case BlockNode b:
                    {
                        var flow = Execute(b.Body, frame, output);
                        if (flow != Flow.Normal) return flow;
                        break;
                    }
                case CallBlockNode cb:
                    {
                        var a = new List<object?>(cb.Call.Args.Count);
                        foreach (var x in cb.Call.Args) a.Add(x.Eval(frame));
                        var kw = new Dictionary<string, object?>();
                        foreach (var (k, x) in cb.Call.Kwargs) kw[k] = x.Eval(frame);
                        var body = cb.Body;
                        kw["caller"] = (JinjaFunction)((_, _, _) =>
                        {
                            var text = new StringBuilder();
                            Execute(body, new Frame(frame), text);
                            return text.ToString();
                        });
                        output.Append(Py.Str(cb.Call.Call(frame, a, kw)));
                        break;
                    }
                case BreakNode:
                    return Flow.Break;
                case ContinueNode:
                    return Flow.Continue;
            }
        }
        return Flow.Normal;
    }

    private static void Assign(AssignTarget target, object? value, Frame frame, int line)
    {
        if (target.Tuple is { } names)
        {
            var parts = value as List<object?> ?? (value is string or Dictionary<string, object?> ? Py.Iterate(value, line)
                : throw new ChatTemplateRenderException($"cannot unpack non-iterable {Py.TypeName(value)} object", line));
            if (parts.Count != names.Count) throw new ChatTemplateRenderException($"cannot unpack {parts.Count} values into {names.Count} names", line);
            for (var i = 0; i < names.Count; i++) Assign(names[i], parts[i], frame, line);
            return;
        }
        if (target.Attribute is null)
        {
            frame.Set(target.Name, value);
            return;
        }
        if (frame.Lookup(target.Name) is not JinjaNamespace ns)
        {
            throw new ChatTemplateRenderException($"cannot assign attribute on non-namespace object '{target.Name}'", line);
        }
        ns[target.Attribute] = value;
    }

    private static void RunFor(ForNode f, Frame frame, StringBuilder output)
    {
        var source = f.Iterable.Eval(frame);
        if (source is null) throw new ChatTemplateRenderException("'NoneType' object is not iterable", f.Line);
        var items = Py.Iterate(source, f.Line);
        var inner = new Frame(frame);
        if (f.Filter is not null)
        {
            var kept = new List<object?>();
            foreach (var item in items)
            {
                Assign(f.Target, item, inner, f.Line);
                if (Py.Truthy(f.Filter.Eval(inner))) kept.Add(item);
            }
            items = kept;
        }
        if (items.Count == 0)
        {
            if (f.Else is not null) Execute(f.Else, inner, output);
            return;
        }
        var loop = new LoopContext(items);
        inner.Set("loop", loop);
        for (var k = 0; k < items.Count; k++)
        {
            Limits.Step(f.Line);
            loop.Index0 = k;
            Assign(f.Target, items[k], inner, f.Line);
            if (Execute(f.Body, inner, output) == Flow.Break) break;
        }
    }
}
