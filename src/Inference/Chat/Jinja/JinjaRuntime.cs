using System.Globalization;
using System.Text;

namespace Serving.Inference.Chat.Jinja;

/// <summary>A callable global or bound method: positional and keyword arguments, the calling line.</summary>
internal delegate object? JinjaFunction(List<object?> args, Dictionary<string, object?> kwargs, int line);

/// <summary>Jinja's undefined: a missing variable, key or attribute. Prints empty, iterates empty, is falsy.</summary>
internal sealed class Undefined
{
    public static readonly Undefined Instance = new();
    public override string ToString() => string.Empty;
}

/// <summary>The object <c>namespace(...)</c> returns: attributes a loop body can assign and the outside can read.</summary>
internal sealed class JinjaNamespace : Dictionary<string, object?>;

/// <summary>The <c>loop</c> variable of a for loop.</summary>
internal sealed class LoopContext(List<object?> items)
{
    public List<object?> Items { get; } = items;
    public int Index0 { get; set; }
    private object? _lastChanged = Undefined.Instance;

    public object? Get(string name) => name switch
    {
        "index" => (long)(Index0 + 1),
        "index0" => (long)Index0,
        "revindex" => (long)(Items.Count - Index0),
        "revindex0" => (long)(Items.Count - Index0 - 1),
        "first" => Index0 == 0,
        "last" => Index0 == Items.Count - 1,
        "length" => (long)Items.Count,
        "previtem" => Index0 > 0 ? Items[Index0 - 1] : Undefined.Instance,
        "nextitem" => Index0 + 1 < Items.Count ? Items[Index0 + 1] : Undefined.Instance,
        "depth" => 1L,
        "depth0" => 0L,
        "cycle" => (JinjaFunction)((a, _, line) => a.Count > 0 ? a[Index0 % a.Count] : throw new ChatTemplateRenderException("loop.cycle() needs at least one argument", line)),
        "changed" => (JinjaFunction)((a, _, _) =>
        {
            object? v = a.Count == 1 ? a[0] : a;
            if (Py.Eq(v, _lastChanged)) return false;
            _lastChanged = v;
            return true;
        }),
        _ => Undefined.Instance,
    };
}

/// <summary>A <c>{% macro %}</c>: parameters with defaults, a body rendered in a scope of its own.</summary>
internal sealed class JinjaMacro(MacroNode node, Frame definition)
{
    public string Name => node.Name;

    public object? Call(List<object?> args, Dictionary<string, object?>? kwargs, Frame caller, int line)
    {
        var p = node.Parameters;
        if (args.Count > p.Count) throw new ChatTemplateRenderException($"macro '{node.Name}' takes not more than {p.Count} argument(s)", line);
        var frame = new Frame(definition);
        for (var i = 0; i < p.Count; i++)
        {
            object? value;
            if (i < args.Count) value = args[i];
            else if (kwargs is not null && kwargs.TryGetValue(p[i].Name, out var kv)) value = kv;
            else value = p[i].Default is { } d ? d.Eval(frame) : Undefined.Instance;
            frame.Set(p[i].Name, value);
        }
        if (kwargs is not null)
        {
            if (kwargs.TryGetValue("caller", out var callerBody)) frame.Set("caller", callerBody);
            foreach (var k in kwargs.Keys)
            {
                if (k == "caller") continue;
                if (!p.Exists(x => x.Name == k)) throw new ChatTemplateRenderException($"macro '{node.Name}' takes no keyword argument '{k}'", line);
            }
        }
        var sb = new StringBuilder();
        Limits.EnterMacro(line);
        try
        {
            JinjaEvaluator.Execute(node.Body, frame, sb);
        }
        finally
        {
            Limits.ExitMacro();
        }
        return sb.ToString();
    }
}

/// <summary>A scope: names set here, then the enclosing scopes'.</summary>
internal sealed class Frame(Frame? parent, Dictionary<string, object?>? vars = null)
{
    private readonly Dictionary<string, object?> _vars = vars ?? new Dictionary<string, object?>(4);
    public Frame? Parent { get; } = parent;

    public object? Lookup(string name)
    {
        for (var f = this; f is not null; f = f.Parent)
        {
            if (f._vars.TryGetValue(name, out var v)) return v;
        }
        return Undefined.Instance;
    }

    public void Set(string name, object? value) => _vars[name] = value;
}

/// <summary>
/// Bounds on one render, so that a template sent with a request cannot exhaust the node: loop iterations and macro
/// calls per render, macro recursion depth, value nesting, and <c>range</c> length (Jinja's sandbox caps it alike).
/// Counted per thread: a render runs synchronously on one.
/// </summary>
internal static class Limits
{
    public const int MaxNesting = 200;
    public const int MaxMacroDepth = 64;
    public const long MaxSteps = 1_000_000;
    public const int MaxRange = 100_000;

    [ThreadStatic] private static long t_steps;
    [ThreadStatic] private static int t_depth;

    public static void StartRender()
    {
        t_steps = 0;
        t_depth = 0;
    }

    public static void Step(int line)
    {
        if (++t_steps > MaxSteps) throw new ChatTemplateRenderException($"the template ran more than {MaxSteps} loop iterations and macro calls", line);
    }

    public static void EnterMacro(int line)
    {
        Step(line);
        if (++t_depth > MaxMacroDepth)
        {
            t_depth--;
            throw new ChatTemplateRenderException($"macros nested more than {MaxMacroDepth} deep", line);
        }
    }

    public static void ExitMacro() => t_depth--;
}

/// <summary>Python's semantics for the values templates handle: truth, text, equality, operators, lookup, JSON.</summary>
internal static class Py
{
    public static string TypeName(object? v) => v switch
    {
        null => "NoneType",
        Undefined => "Undefined",
        bool => "bool",
        long => "int",
        double => "float",
        string => "str",
        List<object?> => "list",
        JinjaNamespace => "Namespace",
        Dictionary<string, object?> => "dict",
        JinjaMacro => "Macro",
        JinjaFunction => "function",
        LoopContext => "LoopContext",
        _ => v.GetType().Name,
    };

    public static bool Truthy(object? v) => v switch
    {
        null or Undefined => false,
        bool b => b,
        string s => s.Length > 0,
        long n => n != 0,
        double x => x != 0,
        List<object?> l => l.Count > 0,
        Dictionary<string, object?> d => d is JinjaNamespace || d.Count > 0,
        _ => true,
    };

    /// <summary>Python's <c>str()</c>, as <c>{{ x }}</c> prints it.</summary>
    public static string Str(object? v) => v switch
    {
        string s => s,
        Undefined => string.Empty,
        _ => Repr(v),
    };

    public static string Repr(object? v)
    {
        var sb = new StringBuilder();
        AppendRepr(sb, v, 0);
        return sb.ToString();
    }

    private static void AppendRepr(StringBuilder sb, object? v, int depth)
    {
        if (depth > Limits.MaxNesting) throw new ChatTemplateRenderException("a value nested too deeply (or containing itself) to print", 0);
        switch (v)
        {
            case null: sb.Append("None"); break;
            case Undefined: sb.Append("Undefined"); break;
            case bool b: sb.Append(b ? "True" : "False"); break;
            case long n: sb.Append(n.ToString(CultureInfo.InvariantCulture)); break;
            case double d: sb.Append(Float(d)); break;
            case string s: AppendStringRepr(sb, s); break;
            case List<object?> l:
                sb.Append('[');
                for (var i = 0; i < l.Count; i++)
                {
                    if (i > 0) sb.Append(", ");
                    AppendRepr(sb, l[i], depth + 1);
                }
                sb.Append(']');
                break;
            case JinjaNamespace ns:
                sb.Append("<Namespace ");
                AppendDict(sb, ns, depth + 1);
                sb.Append('>');
                break;
            case Dictionary<string, object?> d: AppendDict(sb, d, depth + 1); break;
            case JinjaMacro m: sb.Append("<Macro '").Append(m.Name).Append("'>"); break;
            default: sb.Append(v); break;
        }
    }

    private static void AppendDict(StringBuilder sb, Dictionary<string, object?> d, int depth)
    {
        sb.Append('{');
        var first = true;
        foreach (var (k, x) in d)
        {
            if (!first) sb.Append(", ");
            first = false;
            AppendRepr(sb, UnKey(k), depth);
            sb.Append(": ");
            AppendRepr(sb, x, depth);
        }
        sb.Append('}');
    }

    private static void AppendStringRepr(StringBuilder sb, string s)
    {
        var quote = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
        sb.Append(quote);
        foreach (var c in s)
        {
            switch (c)
            {
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (c == quote) sb.Append('\\').Append(c);
                    else if (c < ' ' || c == 0x7f) sb.Append("\\x").Append(((int)c).ToString("x2", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append(quote);
    }

    /// <summary>Python's <c>repr(float)</c>: shortest round trip, <c>.0</c> on integers, <c>e-05</c> exponents.</summary>
    public static string Float(double d)
    {
        if (double.IsNaN(d)) return "nan";
        if (double.IsInfinity(d)) return d > 0 ? "inf" : "-inf";
        if (d == Math.Floor(d) && Math.Abs(d) < 1e16)
        {
            return (d == 0 && double.IsNegative(d) ? "-0" : d.ToString("F0", CultureInfo.InvariantCulture)) + ".0";
        }
        var r = d.ToString("R", CultureInfo.InvariantCulture);
        var e = r.IndexOf('E');
        if (e < 0) return r;
        var mantissa = r[..e];
        var exp = int.Parse(r.AsSpan(e + 1), CultureInfo.InvariantCulture);
        return mantissa + "e" + (exp < 0 ? "-" : "+") + Math.Abs(exp).ToString("00", CultureInfo.InvariantCulture);
    }

    /// <summary>Marks a dictionary key that is an integer in Python (dictionaries here are keyed by strings).</summary>
    private const char IntKey = '\uE000';

    /// <summary>A Python dictionary key as stored: strings as they are, integers and booleans marked.</summary>
    public static string Key(object? k, int line) => k switch
    {
        string s => s,
        long n => IntKey + n.ToString(CultureInfo.InvariantCulture),
        bool b => IntKey + (b ? "1" : "0"),
        _ => throw new ChatTemplateRenderException($"a {TypeName(k)} as a dictionary key is not supported", line),
    };

    /// <summary>A stored key as Python sees it.</summary>
    public static object UnKey(string k) => k.Length > 0 && k[0] == IntKey ? long.Parse(k.AsSpan(1), CultureInfo.InvariantCulture) : k;

    public static bool IsNumber(object? v) => v is long or double or bool;

    private static double ToDouble(object? v) => v switch { long n => n, double d => d, bool b => b ? 1 : 0, _ => 0 };

    private static long ToLong(object? v) => v switch { long n => n, bool b => b ? 1 : 0, _ => 0 };

    public static bool Eq(object? a, object? b)
    {
        if (a is Undefined || b is Undefined) return a is Undefined && b is Undefined;
        if (IsNumber(a) && IsNumber(b)) return a is double || b is double ? ToDouble(a) == ToDouble(b) : ToLong(a) == ToLong(b);
        switch (a)
        {
            case null: return b is null;
            case string s: return b is string t && string.Equals(s, t, StringComparison.Ordinal);
            case List<object?> l:
                if (b is not List<object?> m || m.Count != l.Count) return false;
                for (var i = 0; i < l.Count; i++) if (!Eq(l[i], m[i])) return false;
                return true;
            case JinjaNamespace: return ReferenceEquals(a, b);
            case Dictionary<string, object?> d:
                if (b is not Dictionary<string, object?> e || e is JinjaNamespace || e.Count != d.Count) return false;
                foreach (var (k, x) in d) if (!e.TryGetValue(k, out var y) || !Eq(x, y)) return false;
                return true;
            default: return ReferenceEquals(a, b) || Equals(a, b);
        }
    }

    public static bool Compare(string op, object? l, object? r, int line)
    {
        switch (op)
        {
            case "==": return Eq(l, r);
            case "!=": return !Eq(l, r);
            case "in": return Contains(r, l, line);
            case "notin": return !Contains(r, l, line);
        }
        var c = Order(l, r, op, line);
        return op switch { "<" => c < 0, ">" => c > 0, "<=" => c <= 0, _ => c >= 0 };
    }

    private static int Order(object? l, object? r, string op, int line)
    {
        if (IsNumber(l) && IsNumber(r)) return l is double || r is double ? ToDouble(l).CompareTo(ToDouble(r)) : ToLong(l).CompareTo(ToLong(r));
        if (l is string a && r is string b) return Math.Sign(string.CompareOrdinal(a, b));
        if (l is List<object?> x && r is List<object?> y)
        {
            for (var i = 0; i < Math.Min(x.Count, y.Count); i++)
            {
                if (!Eq(x[i], y[i])) return Order(x[i], y[i], op, line);
            }
            return x.Count.CompareTo(y.Count);
        }
        throw new ChatTemplateRenderException($"'{op}' not supported between instances of '{TypeName(l)}' and '{TypeName(r)}'", line);
    }

    public static bool Contains(object? container, object? item, int line)
    {
        switch (container)
        {
            case string s:
                return item is string t ? s.Contains(t, StringComparison.Ordinal)
                    : throw new ChatTemplateRenderException($"'in <string>' requires string as left operand, not {TypeName(item)}", line);
            case List<object?> l:
                foreach (var x in l) if (Eq(x, item)) return true;
                return false;
            case Dictionary<string, object?> d: return item is string or long or bool && d.ContainsKey(Key(item, line));
            case Undefined: return false;
            default: throw new ChatTemplateRenderException($"argument of type '{TypeName(container)}' is not iterable", line);
        }
    }

    public static object? Binary(string op, object? l, object? r, int line)
    {
        if (op == "~") return Str(l) + Str(r);
        if (l is Undefined || r is Undefined) throw new ChatTemplateRenderException($"undefined value used with '{op}'", line);
        if (IsNumber(l) && IsNumber(r))
        {
            var isFloat = l is double || r is double;
            switch (op)
            {
                case "+": return isFloat ? ToDouble(l) + ToDouble(r) : (object)(ToLong(l) + ToLong(r));
                case "-": return isFloat ? ToDouble(l) - ToDouble(r) : (object)(ToLong(l) - ToLong(r));
                case "*": return isFloat ? ToDouble(l) * ToDouble(r) : (object)(ToLong(l) * ToLong(r));
                case "/":
                    if (ToDouble(r) == 0) throw new ChatTemplateRenderException("division by zero", line);
                    return ToDouble(l) / ToDouble(r);
                case "//":
                    if (ToDouble(r) == 0) throw new ChatTemplateRenderException("integer division or modulo by zero", line);
                    return isFloat ? Math.Floor(ToDouble(l) / ToDouble(r)) : (object)FloorDiv(ToLong(l), ToLong(r));
                case "%":
                    if (ToDouble(r) == 0) throw new ChatTemplateRenderException("integer division or modulo by zero", line);
                    if (isFloat)
                    {
                        var m = ToDouble(l) % ToDouble(r);
                        return m != 0 && (m < 0) != (ToDouble(r) < 0) ? m + ToDouble(r) : m;
                    }
                    var a = ToLong(l);
                    var b = ToLong(r);
                    return a - b * FloorDiv(a, b);
                case "**":
                    if (!isFloat && ToLong(r) >= 0)
                    {
                        long result = 1, x = ToLong(l);
                        for (var i = 0L; i < ToLong(r); i++) result *= x;
                        return result;
                    }
                    return Math.Pow(ToDouble(l), ToDouble(r));
            }
        }
        switch (op, l, r)
        {
            case ("+", string a, string b): return a + b;
            case ("+", List<object?> a, List<object?> b):
                var list = new List<object?>(a.Count + b.Count);
                list.AddRange(a);
                list.AddRange(b);
                return list;
            case ("*", string s, long n): return Repeat(s, n);
            case ("*", long n, string s): return Repeat(s, n);
            case ("*", List<object?> a, long n):
                if (a.Count * n > Limits.MaxRange) throw new ChatTemplateRenderException("a list repeated to more items than the sandbox allows", line);
                var rep = new List<object?>();
                for (var i = 0; i < n; i++) rep.AddRange(a);
                return rep;
            case ("%", string format, _): return Printf.Format(format, r is List<object?> args ? args : [r], line);
        }
        throw new ChatTemplateRenderException($"unsupported operand type(s) for {op}: '{TypeName(l)}' and '{TypeName(r)}'", line);
    }

    private static long FloorDiv(long a, long b)
    {
        var q = a / b;
        return (a % b != 0) && ((a < 0) != (b < 0)) ? q - 1 : q;
    }

    private static string Repeat(string s, long n)
    {
        if (n <= 0) return string.Empty;
        if (s.Length * n > 1 << 24) throw new ChatTemplateRenderException("a string repeated to more than 16 Mi characters", 0);
        var sb = new StringBuilder(s.Length * (int)n);
        for (var i = 0; i < n; i++) sb.Append(s);
        return sb.ToString();
    }

    /// <summary>What a for loop or a sequence filter walks: a list, a string's characters, a mapping's keys.</summary>
    public static List<object?> Iterate(object? v, int line) => v switch
    {
        List<object?> l => l,
        string s => Chars(s),
        Dictionary<string, object?> d => [.. d.Keys.Select(UnKey)],
        Undefined => [],
        _ => throw new ChatTemplateRenderException($"'{TypeName(v)}' object is not iterable", line),
    };

    private static List<object?> Chars(string s)
    {
        var list = new List<object?>(s.Length);
        foreach (var r in s.EnumerateRunes()) list.Add(r.ToString());
        return list;
    }

    public static object? GetAttr(object? obj, string name, int line)
    {
        switch (obj)
        {
            case Undefined: throw new ChatTemplateRenderException($"'{name}' of an undefined value: the value is undefined", line);
            case JinjaNamespace ns: return ns.TryGetValue(name, out var nv) ? nv : Undefined.Instance;
            case LoopContext loop: return loop.Get(name);
            case Dictionary<string, object?> d:
                if (Builtins.IsDictMethod(name)) return BoundMethod(obj, name);
                return d.TryGetValue(name, out var v) ? v : Undefined.Instance;
            case string or List<object?> when Builtins.HasMethod(obj, name): return BoundMethod(obj, name);
            default: return Undefined.Instance;
        }
    }

    private static JinjaFunction BoundMethod(object? target, string name) => (args, kwargs, line) =>
        Builtins.TryMethod(target, name, args, kwargs.Count == 0 ? null : kwargs, line, out var result)
            ? result
            : throw new ChatTemplateRenderException($"'{TypeName(target)}' object has no attribute '{name}'", line);

    public static object? GetItem(object? obj, object? key, int line)
    {
        switch (obj, key)
        {
            case (Undefined, _): throw new ChatTemplateRenderException("subscript of an undefined value", line);
            case (LoopContext loop, string s): return loop.Get(s);
            case (Dictionary<string, object?> d, string s):
                if (d.TryGetValue(s, out var v)) return v;
                return d is not JinjaNamespace && Builtins.IsDictMethod(s) ? BoundMethod(obj, s) : Undefined.Instance;
            case (Dictionary<string, object?> d, long or bool) when d is not JinjaNamespace:
                return d.TryGetValue(Key(key, line), out var iv) ? iv : Undefined.Instance;
            case (List<object?> l, long or bool):
                var i = ToLong(key);
                if (i < 0) i += l.Count;
                return i >= 0 && i < l.Count ? l[(int)i] : Undefined.Instance;
            case (string str, long or bool):
                var chars = Chars(str);
                var j = ToLong(key);
                if (j < 0) j += chars.Count;
                return j >= 0 && j < chars.Count ? chars[(int)j] : Undefined.Instance;
            case (string or List<object?>, string s) when Builtins.HasMethod(obj, s): return BoundMethod(obj, s);
            default: return Undefined.Instance;
        }
    }

    public static object? Slice(object? obj, object? start, object? stop, object? step, int line)
    {
        List<object?> items;
        switch (obj)
        {
            case List<object?> l: items = l; break;
            case string s: items = Chars(s); break;
            case Undefined: throw new ChatTemplateRenderException("slice of an undefined value", line);
            default: return Undefined.Instance;
        }
        long? Bound(object? b) => b switch
        {
            null or Undefined => null,
            long or bool => ToLong(b),
            _ => throw new ChatTemplateRenderException("slice indices must be integers or None", line),
        };
        var count = items.Count;
        var st = Bound(step) ?? 1;
        if (st == 0) throw new ChatTemplateRenderException("slice step cannot be zero", line);
        var result = new List<object?>();
        if (st > 0)
        {
            var from = Clamp(Bound(start) ?? 0, count, 0, count);
            var to = Clamp(Bound(stop) ?? count, count, 0, count);
            for (var i = from; i < to; i += st) result.Add(items[(int)i]);
        }
        else
        {
            var from = Bound(start) is { } s0 ? Clamp(s0, count, -1, count - 1) : count - 1;
            var to = Bound(stop) is { } e0 ? Clamp(e0, count, -1, count - 1) : -1;
            for (var i = from; i > to; i += st) result.Add(items[(int)i]);
        }
        if (obj is not string) return result;
        var sb = new StringBuilder();
        foreach (var c in result) sb.Append((string)c!);
        return sb.ToString();
    }

    private static long Clamp(long v, int count, long lo, long hi) => Math.Clamp(v < 0 ? count + v : v, lo, hi);

    /// <summary>
    /// <c>json.dumps(x, ensure_ascii, indent, separators, sort_keys)</c> as transformers' <c>tojson</c> calls it:
    /// separators <c>", "</c>/<c>": "</c>, or <c>","</c> and one item per line when indented.
    /// </summary>
    public static string ToJson(object? v, string? indent, string itemSeparator, string keySeparator, bool sortKeys, bool ensureAscii, int line)
    {
        var sb = new StringBuilder();
        Write(v, 0);
        return sb.ToString();

        void Write(object? x, int depth)
        {
            if (depth > Limits.MaxNesting) throw new ChatTemplateRenderException("a value nested too deeply (or containing itself) for tojson", line);
            switch (x)
            {
                case null: sb.Append("null"); break;
                case bool b: sb.Append(b ? "true" : "false"); break;
                case long n: sb.Append(n.ToString(CultureInfo.InvariantCulture)); break;
                case double d:
                    sb.Append(double.IsNaN(d) ? "NaN" : double.IsPositiveInfinity(d) ? "Infinity" : double.IsNegativeInfinity(d) ? "-Infinity" : Float(d));
                    break;
                case string s: JsonString(sb, s, ensureAscii); break;
                case List<object?> l:
                    Open('[', l.Count, depth);
                    for (var i = 0; i < l.Count; i++)
                    {
                        Item(i, depth);
                        Write(l[i], depth + 1);
                    }
                    Close(']', l.Count, depth);
                    break;
                case Dictionary<string, object?> m when m is not JinjaNamespace:
                    IEnumerable<KeyValuePair<string, object?>> entries = sortKeys ? m.OrderBy(kv => Str(UnKey(kv.Key)), StringComparer.Ordinal) : m;
                    Open('{', m.Count, depth);
                    var k = 0;
                    foreach (var (key, value) in entries)
                    {
                        Item(k++, depth);
                        JsonString(sb, Str(UnKey(key)), ensureAscii);
                        sb.Append(keySeparator);
                        Write(value, depth + 1);
                    }
                    Close('}', m.Count, depth);
                    break;
                default: throw new ChatTemplateRenderException($"Object of type {TypeName(x)} is not JSON serializable", line);
            }
        }

        void Open(char c, int count, int depth) => sb.Append(c);

        void Item(int i, int depth)
        {
            if (i > 0) sb.Append(itemSeparator);
            if (indent is not null)
            {
                sb.Append('\n');
                for (var j = 0; j <= depth; j++) sb.Append(indent);
            }
        }

        void Close(char c, int count, int depth)
        {
            if (indent is not null && count > 0)
            {
                sb.Append('\n');
                for (var j = 0; j < depth; j++) sb.Append(indent);
            }
            sb.Append(c);
        }
    }

    private static void JsonString(StringBuilder sb, string s, bool ensureAscii)
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
                default:
                    if (c < ' ' || ensureAscii && c > '~') sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }
}

/// <summary>Python's <c>%</c> string formatting for the conversions templates use (<c>%s %d %i %r %f %%</c>).</summary>
internal static class Printf
{
    public static string Format(string format, List<object?> args, int line)
    {
        var sb = new StringBuilder();
        var next = 0;
        for (var i = 0; i < format.Length; i++)
        {
            if (format[i] != '%')
            {
                sb.Append(format[i]);
                continue;
            }
            var j = i + 1;
            while (j < format.Length && (char.IsAsciiDigit(format[j]) || format[j] is '.' or '-' or '+' or ' ')) j++;
            if (j >= format.Length) throw new ChatTemplateRenderException("incomplete format", line);
            var spec = format[(i + 1)..j];
            var conv = format[j];
            i = j;
            if (conv == '%')
            {
                sb.Append('%');
                continue;
            }
            if (next >= args.Count) throw new ChatTemplateRenderException("not enough arguments for format string", line);
            var a = args[next++];
            switch (conv)
            {
                case 's': sb.Append(Py.Str(a)); break;
                case 'r': sb.Append(Py.Repr(a)); break;
                case 'd' or 'i': sb.Append(a is double d ? ((long)d).ToString(CultureInfo.InvariantCulture) : Py.Str(a is bool b ? (b ? 1L : 0L) : a)); break;
                case 'f':
                    var digits = spec.StartsWith('.') && int.TryParse(spec.AsSpan(1), out var p) ? p : 6;
                    sb.Append(Convert.ToDouble(a is bool bb ? (bb ? 1 : 0) : a, CultureInfo.InvariantCulture).ToString("F" + digits, CultureInfo.InvariantCulture));
                    break;
                default: throw new ChatTemplateUnsupportedException($"'%{conv}' string formatting", line);
            }
        }
        if (next < args.Count) throw new ChatTemplateRenderException("not all arguments converted during string formatting", line);
        return sb.ToString();
    }
}

/// <summary>A construct this engine does not render (reached while rendering): the template is refused at load.</summary>
internal sealed class ChatTemplateUnsupportedException(string construct, int line) : TemplateSyntaxException($"{construct} is not supported", line);
