using System.Globalization;
using System.Text;

namespace Serving.Inference.Chat.Jinja;

/// <summary>Runs the statement tree against a scope of variables; Jinja's truthiness and text conversion.</summary>
internal static class JinjaEvaluator
{
    public static void Execute(List<Node> nodes, Dictionary<string, object?> scope, StringBuilder output)
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

    public static bool Truthy(object? v) => v switch
    {
        null => false,
        bool b => b,
        string s => s.Length > 0,
        long n => n != 0,
        List<object?> l => l.Count > 0,
        Dictionary<string, object?> d => d.Count > 0,
        _ => true,
    };

    public static string ToText(object? v) => v switch
    {
        null => string.Empty,
        bool b => b ? "True" : "False",
        long n => n.ToString(CultureInfo.InvariantCulture),
        string s => s,
        _ => v.ToString() ?? string.Empty,
    };
}
