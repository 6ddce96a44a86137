using System.Globalization;
using System.Text;

namespace Serving.Inference.Chat.Jinja;

/// <summary>Runs the statement tree against a scope of variables; Jinja's truthiness, scoping and text conversion.</summary>
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
                case SetNode { Attribute: null } s:
                    scope[s.Name] = s.Expr.Eval(scope);
                    break;
                case SetNode s:
                    if (!scope.TryGetValue(s.Name, out var target) || target is not JinjaNamespace ns)
                    {
                        throw new FormatException($"chat template: '{s.Name}.{s.Attribute}' can only be set on a namespace()");
                    }
                    ns[s.Attribute] = s.Expr.Eval(scope);
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
                    RunFor(f, scope, output);
                    break;
            }
        }
    }

    /// <summary>
    /// A for loop runs in its own scope, as in Jinja: what its body sets is gone after the loop (a namespace's
    /// attributes, being one shared object, are how a template carries values out).
    /// </summary>
    private static void RunFor(ForNode f, Dictionary<string, object?> scope, StringBuilder output)
    {
        var items = f.Iterable.Eval(scope) switch
        {
            null or Undefined => [],
            var other => Iterate(other),
        };
        var inner = new Dictionary<string, object?>(scope);
        for (var k = 0; k < items.Count; k++)
        {
            if (f.Variables.Count == 1)
            {
                inner[f.Variables[0]] = items[k];
            }
            else
            {
                var parts = items[k] as List<object?> ?? throw new FormatException($"chat template: cannot unpack {TypeName(items[k])} into {string.Join(", ", f.Variables)}");
                if (parts.Count != f.Variables.Count) throw new FormatException($"chat template: cannot unpack {parts.Count} values into {f.Variables.Count} names");
                for (var v = 0; v < parts.Count; v++) inner[f.Variables[v]] = parts[v];
            }
            inner["loop"] = new Dictionary<string, object?>
            {
                ["index"] = (long)(k + 1), ["index0"] = (long)k, ["first"] = k == 0, ["last"] = k == items.Count - 1,
                ["length"] = (long)items.Count, ["revindex"] = (long)(items.Count - k), ["revindex0"] = (long)(items.Count - k - 1),
                ["previtem"] = k > 0 ? items[k - 1] : Undefined.Value, ["nextitem"] = k + 1 < items.Count ? items[k + 1] : Undefined.Value,
            };
            Execute(f.Body, inner, output);
        }
    }

    /// <summary>The items a for loop or a list filter walks: a list, a string's characters, a mapping's keys.</summary>
    public static List<object?> Iterate(object? v) => v switch
    {
        List<object?> l => l,
        string str => str.Select(c => (object?)c.ToString()).ToList(),
        Dictionary<string, object?> d => d.Keys.Select(k => (object?)k).ToList(),
        _ => throw new FormatException($"chat template: cannot iterate over {TypeName(v)}"),
    };

    /// <summary>A mapping's (key, value) pairs, each a two-item list (for <c>for k, v in d|items</c>).</summary>
    public static List<object?> Items(Dictionary<string, object?> d) => d.Select(kv => (object?)new List<object?> { kv.Key, kv.Value }).ToList();

    public static bool Truthy(object? v) => v switch
    {
        null or Undefined => false,
        bool b => b,
        string s => s.Length > 0,
        long n => n != 0,
        double x => x != 0,
        List<object?> l => l.Count > 0,
        Dictionary<string, object?> d => d.Count > 0,
        _ => true,
    };

    public static string ToText(object? v) => v switch
    {
        null => "None",
        Undefined => string.Empty,
        bool b => b ? "True" : "False",
        long n => n.ToString(CultureInfo.InvariantCulture),
        double x => x.ToString("R", CultureInfo.InvariantCulture),
        string s => s,
        _ => v.ToString() ?? string.Empty,
    };

    public static string TypeName(object? v) => v switch
    {
        null => "none",
        Undefined => "undefined",
        string => "string",
        long or double => "number",
        bool => "boolean",
        List<object?> => "list",
        Dictionary<string, object?> => "mapping",
        _ => v.GetType().Name,
    };

    public static string Title(string s)
    {
        var sb = new StringBuilder(s.Length);
        var start = true;
        foreach (var c in s)
        {
            sb.Append(start ? char.ToUpperInvariant(c) : char.ToLowerInvariant(c));
            start = !char.IsLetterOrDigit(c);
        }
        return sb.ToString();
    }

    public static string Capitalize(string s) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

    /// <summary>
    /// transformers' <c>tojson</c>: Python's <c>json.dumps(x, ensure_ascii=False, indent=indent)</c> — separators
    /// <c>", "</c>/<c>": "</c>, or <c>","</c> and one item per line with an indent.
    /// </summary>
    public static string ToJson(object? v, long? indent)
    {
        var sb = new StringBuilder();
        Write(v, 0);
        return sb.ToString();

        void Write(object? x, int depth)
        {
            switch (x)
            {
                case null or Undefined: sb.Append("null"); break;
                case bool b: sb.Append(b ? "true" : "false"); break;
                case long n: sb.Append(n.ToString(CultureInfo.InvariantCulture)); break;
                case double d: sb.Append(d.ToString("R", CultureInfo.InvariantCulture)); break;
                case string s: WriteString(s); break;
                case List<object?> l: Container('[', ']', l.Count, i => Write(l[i], depth + 1), depth); break;
                case Dictionary<string, object?> m:
                    var entries = m.ToList();
                    Container('{', '}', entries.Count, i =>
                    {
                        WriteString(entries[i].Key);
                        sb.Append(": ");
                        Write(entries[i].Value, depth + 1);
                    }, depth);
                    break;
                default: WriteString(ToText(x)); break;
            }
        }

        void Container(char open, char close, int count, Action<int> item, int depth)
        {
            sb.Append(open);
            if (count == 0)
            {
                sb.Append(close);
                return;
            }
            for (var i = 0; i < count; i++)
            {
                if (i > 0) sb.Append(indent is null ? ", " : ",");
                if (indent is { } n) sb.Append('\n').Append(' ', (int)n * (depth + 1));
                item(i);
            }
            if (indent is { } m) sb.Append('\n').Append(' ', (int)m * depth);
            sb.Append(close);
        }

        void WriteString(string s)
        {
            sb.Append('"');
            foreach (var c in s)
            {
                switch (c)
                {
                    case '"': sb.Append("\\\""); break;
                    case '\\': sb.Append("\\\\"); break;
                    case '\n': sb.Append("\\n"); break;
                    case '\r': sb.Append("\\r"); break;
                    case '\t': sb.Append("\\t"); break;
                    case '\b': sb.Append("\\b"); break;
                    case '\f': sb.Append("\\f"); break;
                    case < ' ': sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture)); break;
                    default: sb.Append(c); break;
                }
            }
            sb.Append('"');
        }
    }
}
