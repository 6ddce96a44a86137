using System.Globalization;
using System.Text;

namespace Serving.Inference.Chat.Jinja;

/// <summary>Jinja's filters and tests, and the Python string, dict and list methods templates call.</summary>
internal static class Builtins
{
    public static readonly Dictionary<string, object?> NoKwargs = [];

    /// <summary>Filters this engine renders (Jinja's names, aliases included); any other name is refused at load.</summary>
    public static readonly HashSet<string> Filters =
    [
        "abs", "attr", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape", "first", "float",
        "forceescape", "format", "indent", "int", "items", "join", "last", "length", "list", "lower", "map", "max", "min",
        "reject", "rejectattr", "replace", "reverse", "round", "safe", "select", "selectattr", "sort", "string", "sum",
        "title", "tojson", "trim", "truncate", "unique", "upper", "wordcount",
    ];

    /// <summary>Tests this engine knows; any other name is refused at load.</summary>
    public static readonly HashSet<string> Tests =
    [
        "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "==", "escaped", "even", "false", "filter", "float",
        "ge", ">=", "gt", "greaterthan", ">", "in", "integer", "iterable", "le", "<=", "lower", "lt", "lessthan", "<", "mapping",
        "ne", "!=", "none", "number", "odd", "sameas", "sequence", "string", "test", "true", "undefined", "upper",
    ];

    private static readonly HashSet<string> StringMethods =
    [
        "strip", "lstrip", "rstrip", "upper", "lower", "title", "capitalize", "startswith", "endswith", "replace", "split",
        "rsplit", "splitlines", "join", "find", "rfind", "index", "count", "format", "isdigit", "isalpha", "isalnum",
        "isspace", "isupper", "islower", "isnumeric", "zfill", "center", "ljust", "rjust", "removeprefix", "removesuffix", "swapcase",
    ];

    private static readonly HashSet<string> DictMethods = ["items", "keys", "values", "get", "copy", "update", "pop", "setdefault", "clear", "popitem"];

    private static readonly HashSet<string> ListMethods = ["index", "count", "copy", "append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse"];

    /// <summary>Methods that change the object: the sandbox transformers uses refuses them at render time.</summary>
    private static readonly HashSet<string> Mutating = ["update", "pop", "setdefault", "clear", "popitem", "append", "extend", "insert", "remove", "sort", "reverse"];

    /// <summary>Whether a method of this name exists on some type (names outside all of them are refused at load).</summary>
    public static bool IsKnownMethod(string name) => StringMethods.Contains(name) || DictMethods.Contains(name) || ListMethods.Contains(name);

    public static bool IsDictMethod(string name) => DictMethods.Contains(name);

    public static bool HasMethod(object? target, string name) => target switch
    {
        string => StringMethods.Contains(name),
        List<object?> => ListMethods.Contains(name),
        JinjaNamespace => false,
        Dictionary<string, object?> => DictMethods.Contains(name),
        _ => false,
    };

    private static string Text(List<object?> a, int i, string method, int line) =>
        i < a.Count && a[i] is string s ? s : throw new ChatTemplateRenderException($"{method}() argument {i + 1} must be str, not {Py.TypeName(i < a.Count ? a[i] : null)}", line);

    public static bool TryMethod(object? target, string name, List<object?> a, Dictionary<string, object?>? kw, int line, out object? result)
    {
        result = null;
        if (!HasMethod(target, name)) return false;
        if (Mutating.Contains(name) && target is not string)
        {
            throw new ChatTemplateRenderException($"access to '{Py.TypeName(target)}.{name}' is unsafe: the sandbox refuses methods that modify a value", line);
        }
        result = target switch
        {
            string s => StringMethod(s, name, a, kw, line),
            List<object?> l => name switch
            {
                "index" => IndexOf(l, a, line),
                "count" => (long)l.Count(x => Py.Eq(x, a.Count > 0 ? a[0] : null)),
                _ => new List<object?>(l),
            },
            Dictionary<string, object?> d => name switch
            {
                "items" => Items(d),
                "keys" => d.Keys.Select(k => (object?)Py.UnKey(k)).ToList(),
                "values" => d.Values.ToList(),
                "get" => a.Count > 0 && a[0] is string or long or bool && d.TryGetValue(Py.Key(a[0], line), out var v) ? v : a.Count > 1 ? a[1] : null,
                _ => new Dictionary<string, object?>(d),
            },
            _ => null,
        };
        return true;
    }

    private static object IndexOf(List<object?> l, List<object?> a, int line)
    {
        for (var i = 0; i < l.Count; i++) if (Py.Eq(l[i], a.Count > 0 ? a[0] : null)) return (long)i;
        throw new ChatTemplateRenderException("value is not in list", line);
    }

    public static List<object?> Items(Dictionary<string, object?> d)
    {
        var list = new List<object?>(d.Count);
        foreach (var (k, v) in d) list.Add(new List<object?> { Py.UnKey(k), v });
        return list;
    }

    private static object? StringMethod(string s, string name, List<object?> a, Dictionary<string, object?>? kw, int line)
    {
        string? Chars(int i) => i < a.Count && a[i] is string c ? c : null;
        switch (name)
        {
            case "strip": return Chars(0) is { } c0 ? s.Trim(c0.ToCharArray()) : s.Trim();
            case "lstrip": return Chars(0) is { } c1 ? s.TrimStart(c1.ToCharArray()) : s.TrimStart();
            case "rstrip": return Chars(0) is { } c2 ? s.TrimEnd(c2.ToCharArray()) : s.TrimEnd();
            case "upper": return s.ToUpperInvariant();
            case "lower": return s.ToLowerInvariant();
            case "swapcase": return string.Concat(s.Select(c => char.IsUpper(c) ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c)));
            case "title": return Title(s);
            case "capitalize": return s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();
            case "startswith" or "endswith":
                {
                    var prefixes = a.Count > 0 && a[0] is List<object?> t ? t.Select(x => x as string ?? "").ToList() : [Text(a, 0, name, line)];
                    return prefixes.Any(p => name == "startswith" ? s.StartsWith(p, StringComparison.Ordinal) : s.EndsWith(p, StringComparison.Ordinal));
                }
            case "replace":
                {
                    var old = Text(a, 0, name, line);
                    var repl = Text(a, 1, name, line);
                    var count = a.Count > 2 && a[2] is long n ? n : -1;
                    return Replace(s, old, repl, count);
                }
            case "split" or "rsplit":
                {
                    var sep = a.Count > 0 ? a[0] as string : kw?.GetValueOrDefault("sep") as string;
                    var max = a.Count > 1 && a[1] is long m ? m : kw?.GetValueOrDefault("maxsplit") is long mk ? mk : -1;
                    return Split(s, sep, max, name == "rsplit", line);
                }
            case "splitlines": return s.Split('\n').Select(x => (object?)x.TrimEnd('\r')).ToList() is var lines && s.EndsWith('\n') ? lines[..^1] : lines;
            case "join": return string.Join(s, Py.Iterate(a.Count > 0 ? a[0] : null, line).Select(x => x as string ?? throw new ChatTemplateRenderException($"sequence item: expected str instance, {Py.TypeName(x)} found", line)));
            case "find": return (long)s.IndexOf(Text(a, 0, name, line), StringComparison.Ordinal);
            case "rfind": return (long)s.LastIndexOf(Text(a, 0, name, line), StringComparison.Ordinal);
            case "index":
                {
                    var i = s.IndexOf(Text(a, 0, name, line), StringComparison.Ordinal);
                    return i >= 0 ? (long)i : throw new ChatTemplateRenderException("substring not found", line);
                }
            case "count":
                {
                    var sub = Text(a, 0, name, line);
                    if (sub.Length == 0) return (long)(s.Length + 1);
                    long n = 0;
                    for (var i = s.IndexOf(sub, StringComparison.Ordinal); i >= 0; i = s.IndexOf(sub, i + sub.Length, StringComparison.Ordinal)) n++;
                    return n;
                }
            case "format": return PyFormat(s, a, kw ?? NoKwargs, line);
            case "isdigit" or "isnumeric": return s.Length > 0 && s.All(char.IsDigit);
            case "isalpha": return s.Length > 0 && s.All(char.IsLetter);
            case "isalnum": return s.Length > 0 && s.All(char.IsLetterOrDigit);
            case "isspace": return s.Length > 0 && s.All(char.IsWhiteSpace);
            case "isupper": return s.Any(char.IsLetter) && !s.Any(char.IsLower);
            case "islower": return s.Any(char.IsLetter) && !s.Any(char.IsUpper);
            case "zfill":
                {
                    var w = a.Count > 0 && a[0] is long z ? (int)z : 0;
                    return s.Length >= w ? s : s.Length > 0 && s[0] is '-' or '+' ? s[0] + new string('0', w - s.Length) + s[1..] : new string('0', w - s.Length) + s;
                }
            case "center": return Center(s, a.Count > 0 && a[0] is long cw ? (int)cw : 0);
            case "ljust": return s.PadRight(a.Count > 0 && a[0] is long lw ? (int)lw : 0, Chars(1)?[0] ?? ' ');
            case "rjust": return s.PadLeft(a.Count > 0 && a[0] is long rw ? (int)rw : 0, Chars(1)?[0] ?? ' ');
            case "removeprefix": return s.StartsWith(Text(a, 0, name, line), StringComparison.Ordinal) ? s[Text(a, 0, name, line).Length..] : s;
            case "removesuffix": return Text(a, 0, name, line) is { Length: > 0 } suf && s.EndsWith(suf, StringComparison.Ordinal) ? s[..^suf.Length] : s;
        }
        throw new ChatTemplateUnsupportedException($"method str.{name}()", line);
    }

    private static string Center(string s, int width)
    {
        if (width <= s.Length) return s;
        var pad = width - s.Length;
        var left = pad / 2 + (pad & width & 1);
        return new string(' ', left) + s + new string(' ', pad - left);
    }

    private static string Replace(string s, string old, string repl, long count)
    {
        if (count < 0) return old.Length == 0 ? InsertEverywhere(s, repl) : s.Replace(old, repl, StringComparison.Ordinal);
        var sb = new StringBuilder();
        var pos = 0;
        for (long n = 0; n < count; n++)
        {
            var i = s.IndexOf(old, pos, StringComparison.Ordinal);
            if (i < 0 || old.Length == 0) break;
            sb.Append(s, pos, i - pos).Append(repl);
            pos = i + old.Length;
        }
        return sb.Append(s, pos, s.Length - pos).ToString();
    }

    private static string InsertEverywhere(string s, string repl)
    {
        var sb = new StringBuilder(repl);
        foreach (var c in s) sb.Append(c).Append(repl);
        return sb.ToString();
    }

    private static List<object?> Split(string s, string? sep, long max, bool fromRight, int line)
    {
        var parts = new List<object?>();
        if (sep is null)
        {
            var words = s.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            if (max < 0 || words.Length <= max + 1) return [.. words];
            // Python keeps the rest (from its first non-space) as the last part.
            var rest = s.TrimStart();
            for (var i = 0; i < max; i++)
            {
                var w = rest.IndexOfAny([' ', '\t', '\n', '\r', '\f', '\v']);
                parts.Add(rest[..w]);
                rest = rest[w..].TrimStart();
            }
            parts.Add(rest);
            return parts;
        }
        if (sep.Length == 0) throw new ChatTemplateRenderException("empty separator", line);
        if (max < 0) return [.. s.Split(sep)];
        if (!fromRight)
        {
            var pos = 0;
            for (var n = 0; n < max; n++)
            {
                var i = s.IndexOf(sep, pos, StringComparison.Ordinal);
                if (i < 0) break;
                parts.Add(s[pos..i]);
                pos = i + sep.Length;
            }
            parts.Add(s[pos..]);
            return parts;
        }
        var end = s.Length;
        for (var n = 0; n < max; n++)
        {
            var i = s.LastIndexOf(sep, end - 1 < 0 ? 0 : end - 1, StringComparison.Ordinal);
            if (i < 0 || i + sep.Length > end) break;
            parts.Insert(0, s[(i + sep.Length)..end]);
            end = i;
        }
        parts.Insert(0, s[..end]);
        return parts;
    }

    /// <summary><c>str.format</c> with <c>{}</c>, <c>{0}</c> and <c>{name}</c> fields (no format specs).</summary>
    private static string PyFormat(string format, List<object?> a, Dictionary<string, object?> kw, int line)
    {
        var sb = new StringBuilder();
        var auto = 0;
        for (var i = 0; i < format.Length; i++)
        {
            var c = format[i];
            if (c == '{' && i + 1 < format.Length && format[i + 1] == '{') { sb.Append('{'); i++; continue; }
            if (c == '}' && i + 1 < format.Length && format[i + 1] == '}') { sb.Append('}'); i++; continue; }
            if (c != '{') { sb.Append(c); continue; }
            var end = format.IndexOf('}', i);
            if (end < 0) throw new ChatTemplateRenderException("Single '{' encountered in format string", line);
            var field = format[(i + 1)..end];
            if (field.Contains(':') || field.Contains('!')) throw new ChatTemplateUnsupportedException("str.format() with a format spec or conversion", line);
            object? v = field.Length == 0 ? (auto < a.Count ? a[auto++] : throw new ChatTemplateRenderException("Replacement index out of range", line))
                : int.TryParse(field, out var idx) ? (idx < a.Count ? a[idx] : throw new ChatTemplateRenderException("Replacement index out of range", line))
                : kw.TryGetValue(field, out var named) ? named : throw new ChatTemplateRenderException($"KeyError: '{field}'", line);
            sb.Append(Py.Str(v));
            i = end;
        }
        return sb.ToString();
    }

    public static string Title(string s)
    {
        var sb = new StringBuilder(s.Length);
        var previousCased = false;
        foreach (var c in s)
        {
            sb.Append(previousCased ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c));
            previousCased = char.IsLetter(c);
        }
        return sb.ToString();
    }

    public static bool Test(string name, object? v, List<object?> a, int line)
    {
        object? Arg() => a.Count > 0 ? a[0] : throw new ChatTemplateRenderException($"test '{name}' needs an argument", line);
        return name switch
        {
            "defined" => v is not Undefined,
            "undefined" => v is Undefined,
            "none" => v is null,
            "boolean" => v is bool,
            "false" => v is false,
            "true" => v is true,
            "integer" => v is long,
            "float" => v is double,
            "number" => v is long or double or bool,
            "string" => v is string,
            "mapping" => v is Dictionary<string, object?> and not JinjaNamespace,
            "sequence" => v is List<object?> or string or Dictionary<string, object?>,
            "iterable" => v is List<object?> or string or Dictionary<string, object?> or Undefined,
            "callable" => v is JinjaFunction or JinjaMacro,
            "even" => v is long n ? n % 2 == 0 : throw new ChatTemplateRenderException("'even' needs an integer", line),
            "odd" => v is long m ? m % 2 != 0 : throw new ChatTemplateRenderException("'odd' needs an integer", line),
            "divisibleby" => v is long x && Arg() is long y && y != 0 && x % y == 0,
            "eq" or "equalto" or "==" => Py.Eq(v, Arg()),
            "ne" or "!=" => !Py.Eq(v, Arg()),
            "lt" or "lessthan" or "<" => Py.Compare("<", v, Arg(), line),
            "le" or "<=" => Py.Compare("<=", v, Arg(), line),
            "gt" or "greaterthan" or ">" => Py.Compare(">", v, Arg(), line),
            "ge" or ">=" => Py.Compare(">=", v, Arg(), line),
            "in" => Py.Contains(Arg(), v, line),
            "sameas" => ReferenceEquals(v, Arg()) || v is null && Arg() is null || v is bool b && Arg() is bool c && b == c,
            "lower" => v is string s && s == s.ToLowerInvariant(),
            "upper" => v is string u && u == u.ToUpperInvariant(),
            "escaped" => false,
            "filter" => v is string f && Filters.Contains(f),
            "test" => v is string t && Tests.Contains(t),
            _ => throw new ChatTemplateUnsupportedException($"test '{name}'", line),
        };
    }

    public static object? Filter(FilterCall f, object? v, Frame frame)
    {
        var a = new List<object?>(f.Args.Count);
        foreach (var x in f.Args) a.Add(x.Eval(frame));
        Dictionary<string, object?>? kw = null;
        if (f.Kwargs.Count > 0)
        {
            kw = new Dictionary<string, object?>(f.Kwargs.Count);
            foreach (var (k, x) in f.Kwargs) kw[k] = x.Eval(frame);
        }
        return Apply(f.Name, v, a, kw ?? NoKwargs, f.Line);
    }

    /// <summary>An argument by position or name, or the default.</summary>
    private static object? Arg(List<object?> a, Dictionary<string, object?> kw, int i, string name, object? fallback) =>
        i < a.Count ? a[i] : kw.TryGetValue(name, out var v) ? v : fallback;

    public static object? Apply(string name, object? v, List<object?> a, Dictionary<string, object?> kw, int line)
    {
        switch (name)
        {
            case "safe" or "e" or "escape" or "forceescape":
                return name == "safe" ? v : Escape(Py.Str(v));
            case "string": return v is string ? v : Py.Str(v);
            case "trim":
                {
                    var s = Py.Str(v);
                    return Arg(a, kw, 0, "chars", null) is string chars ? s.Trim(chars.ToCharArray()) : s.Trim();
                }
            case "upper": return Py.Str(v).ToUpperInvariant();
            case "lower": return Py.Str(v).ToLowerInvariant();
            case "title": return Title(Py.Str(v));
            case "capitalize":
                {
                    var s = Py.Str(v);
                    return s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();
                }
            case "length" or "count":
                return v switch
                {
                    string s => (long)s.EnumerateRunes().Count(),
                    List<object?> l => (long)l.Count,
                    Dictionary<string, object?> d => (long)d.Count,
                    Undefined => 0L,
                    _ => throw new ChatTemplateRenderException($"object of type '{Py.TypeName(v)}' has no len()", line),
                };
            case "wordcount": return (long)Py.Str(v).Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).Length;
            case "list": return new List<object?>(Py.Iterate(v, line));
            case "first":
                {
                    var l = Py.Iterate(v, line);
                    return l.Count > 0 ? l[0] : Undefined.Instance;
                }
            case "last":
                {
                    var l = Py.Iterate(v, line);
                    return l.Count > 0 ? l[^1] : Undefined.Instance;
                }
            case "reverse":
                if (v is string rs)
                {
                    var runes = rs.EnumerateRunes().Reverse();
                    return string.Concat(runes.Select(r => r.ToString()));
                }
                var rl = new List<object?>(Py.Iterate(v, line));
                rl.Reverse();
                return rl;
            case "items":
                return v switch
                {
                    Dictionary<string, object?> d => Items(d),
                    Undefined => new List<object?>(),
                    _ => throw new ChatTemplateRenderException($"items filter needs a mapping, got {Py.TypeName(v)}", line),
                };
            case "join":
                {
                    var sep = Py.Str(Arg(a, kw, 0, "d", ""));
                    var attribute = Arg(a, kw, 1, "attribute", null) as string;
                    var items = Py.Iterate(v, line);
                    var sb = new StringBuilder();
                    for (var i = 0; i < items.Count; i++)
                    {
                        if (i > 0) sb.Append(sep);
                        sb.Append(Py.Str(attribute is null ? items[i] : Attribute(items[i], attribute, line)));
                    }
                    return sb.ToString();
                }
            case "default" or "d":
                {
                    var fallback = Arg(a, kw, 0, "default_value", "");
                    var boolean = Py.Truthy(Arg(a, kw, 1, "boolean", false));
                    return v is Undefined || boolean && !Py.Truthy(v) ? fallback : v;
                }
            case "replace":
                {
                    var count = Arg(a, kw, 2, "count", null) is long n ? n : -1;
                    return Replace(Py.Str(v), Py.Str(Arg(a, kw, 0, "old", "")), Py.Str(Arg(a, kw, 1, "new", "")), count);
                }
            case "int":
                {
                    var fallback = Arg(a, kw, 0, "default", 0L);
                    return v switch
                    {
                        long n => n,
                        bool b => b ? 1L : 0L,
                        double d => (long)Math.Truncate(d),
                        string s when long.TryParse(s.Trim(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var n) => n,
                        string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var d) => (long)Math.Truncate(d),
                        _ => fallback,
                    };
                }
            case "float":
                {
                    var fallback = Arg(a, kw, 0, "default", 0.0);
                    return v switch
                    {
                        long n => (double)n,
                        bool b => b ? 1.0 : 0.0,
                        double d => d,
                        string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var d) => d,
                        _ => fallback,
                    };
                }
            case "abs": return v switch { long n => (object)Math.Abs(n), double d => Math.Abs(d), _ => throw new ChatTemplateRenderException("bad operand type for abs()", line) };
            case "round":
                {
                    var precision = Arg(a, kw, 0, "precision", 0L) is long p ? (int)p : 0;
                    var method = Arg(a, kw, 1, "method", "common") as string;
                    var d = v switch { long n => n, double x => x, bool b => b ? 1 : 0, _ => throw new ChatTemplateRenderException("round needs a number", line) };
                    var scale = Math.Pow(10, precision);
                    return method switch
                    {
                        "ceil" => Math.Ceiling(d * scale) / scale,
                        "floor" => Math.Floor(d * scale) / scale,
                        _ => Math.Round(d, precision, MidpointRounding.ToEven),
                    };
                }
            case "sum":
                {
                    var attribute = Arg(a, kw, 0, "attribute", null) as string;
                    object? total = Arg(a, kw, 1, "start", 0L);
                    foreach (var x in Py.Iterate(v, line)) total = Py.Binary("+", total, attribute is null ? x : Attribute(x, attribute, line), line);
                    return total;
                }
            case "min" or "max":
                {
                    var items = Py.Iterate(v, line);
                    if (items.Count == 0) return Undefined.Instance;
                    var best = items[0];
                    foreach (var x in items.Skip(1)) if (Py.Compare(name == "min" ? "<" : ">", x, best, line)) best = x;
                    return best;
                }
            case "unique":
                {
                    var result = new List<object?>();
                    foreach (var x in Py.Iterate(v, line))
                    {
                        if (!result.Exists(y => Py.Eq(x is string s && !Py.Truthy(Arg(a, kw, 0, "case_sensitive", false)) ? s.ToLowerInvariant() : x,
                            y is string t && !Py.Truthy(Arg(a, kw, 0, "case_sensitive", false)) ? t.ToLowerInvariant() : y))) result.Add(x);
                    }
                    return result;
                }
            case "sort":
                {
                    var reverse = Py.Truthy(Arg(a, kw, 0, "reverse", false));
                    var attribute = Arg(a, kw, 2, "attribute", null) as string;
                    var items = new List<object?>(Py.Iterate(v, line));
                    var keyed = items.Select(x => (Key: attribute is null ? x : Attribute(x, attribute, line), Item: x)).ToList();
                    var sorted = keyed.Order(Comparer<(object? Key, object? Item)>.Create((p, q) =>
                        Py.Compare("<", p.Key, q.Key, line) ? -1 : Py.Compare("<", q.Key, p.Key, line) ? 1 : 0)).Select(p => p.Item).ToList();
                    if (reverse) sorted.Reverse();
                    return sorted;
                }
            case "dictsort":
                {
                    if (v is not Dictionary<string, object?> d) throw new ChatTemplateRenderException("dictsort needs a mapping", line);
                    var byValue = Arg(a, kw, 1, "by", "key") as string == "value";
                    var reverse = Py.Truthy(Arg(a, kw, 2, "reverse", false));
                    var items = Items(d);
                    var sorted = items.Order(Comparer<object?>.Create((p, q) =>
                    {
                        var x = ((List<object?>)p!)[byValue ? 1 : 0];
                        var y = ((List<object?>)q!)[byValue ? 1 : 0];
                        return Py.Compare("<", x, y, line) ? -1 : Py.Compare("<", y, x, line) ? 1 : 0;
                    })).ToList();
                    if (reverse) sorted.Reverse();
                    return sorted;
                }
            case "batch":
                {
                    var size = Arg(a, kw, 0, "linecount", 1L) is long n && n > 0 ? (int)n : 1;
                    var items = Py.Iterate(v, line);
                    var result = new List<object?>();
                    for (var i = 0; i < items.Count; i += size) result.Add(items.Skip(i).Take(size).ToList());
                    return result;
                }
            case "attr": return Py.GetAttr(v, Py.Str(Arg(a, kw, 0, "name", "")), line);
            case "map":
                {
                    var items = Py.Iterate(v, line);
                    var result = new List<object?>(items.Count);
                    if (kw.TryGetValue("attribute", out var attr))
                    {
                        var fallback = kw.TryGetValue("default", out var dv) ? dv : Undefined.Instance;
                        foreach (var x in items)
                        {
                            var y = Attribute(x, Py.Str(attr), line);
                            result.Add(y is Undefined ? fallback : y);
                        }
                        return result;
                    }
                    if (a.Count == 0 || a[0] is not string filter) throw new ChatTemplateRenderException("map needs a filter name or attribute=", line);
                    if (!Filters.Contains(filter)) throw new ChatTemplateUnsupportedException($"filter '{filter}' (through map)", line);
                    var rest = a.GetRange(1, a.Count - 1);
                    foreach (var x in items) result.Add(Apply(filter, x, rest, kw, line));
                    return result;
                }
            case "select" or "reject":
                {
                    var keep = name == "select";
                    var result = new List<object?>();
                    var test = a.Count > 0 ? a[0] as string : null;
                    if (test is not null && !Tests.Contains(test)) throw new ChatTemplateUnsupportedException($"test '{test}' (through {name})", line);
                    var rest = a.Count > 1 ? a.GetRange(1, a.Count - 1) : [];
                    foreach (var x in Py.Iterate(v, line))
                    {
                        var ok = test is null ? Py.Truthy(x) : Test(test, x, rest, line);
                        if (ok == keep) result.Add(x);
                    }
                    return result;
                }
            case "selectattr" or "rejectattr":
                {
                    var keep = name == "selectattr";
                    var attribute = a.Count > 0 ? Py.Str(a[0]) : throw new ChatTemplateRenderException($"{name} needs an attribute", line);
                    var test = a.Count > 1 ? a[1] as string : null;
                    if (test is not null && !Tests.Contains(test)) throw new ChatTemplateUnsupportedException($"test '{test}' (through {name})", line);
                    var rest = a.Count > 2 ? a.GetRange(2, a.Count - 2) : [];
                    var result = new List<object?>();
                    foreach (var x in Py.Iterate(v, line))
                    {
                        var value = Attribute(x, attribute, line);
                        var ok = test is null ? Py.Truthy(value) : Test(test, value, rest, line);
                        if (ok == keep) result.Add(x);
                    }
                    return result;
                }
            case "tojson":
                {
                    var ensureAscii = Py.Truthy(Arg(a, kw, 0, "ensure_ascii", false));
                    var indentArg = Arg(a, kw, 1, "indent", null);
                    var separators = Arg(a, kw, 2, "separators", null);
                    var sortKeys = Py.Truthy(Arg(a, kw, 3, "sort_keys", false));
                    string? indent = indentArg switch
                    {
                        null => null,
                        long n => new string(' ', (int)Math.Max(0, n)),
                        string s => s,
                        _ => throw new ChatTemplateRenderException("tojson indent must be an integer or a string", line),
                    };
                    var (item, key) = separators is List<object?> { Count: 2 } sep && sep[0] is string i && sep[1] is string k
                        ? (i, k) : (indent is null ? ", " : ",", ": ");
                    return Py.ToJson(v, indent, item, key, sortKeys, ensureAscii, line);
                }
            case "indent":
                {
                    var widthArg = Arg(a, kw, 0, "width", 4L);
                    var pad = widthArg is string ws ? ws : new string(' ', widthArg is long w ? (int)w : 4);
                    var first = Py.Truthy(Arg(a, kw, 1, "first", false));
                    var blank = Py.Truthy(Arg(a, kw, 2, "blank", false));
                    var s = Py.Str(v);
                    var lines = s.Split('\n');
                    var sb = new StringBuilder();
                    for (var i = 0; i < lines.Length; i++)
                    {
                        if (i > 0) sb.Append('\n');
                        var indentThis = (i > 0 || first) && (blank || lines[i].Trim().Length > 0);
                        if (indentThis) sb.Append(pad);
                        sb.Append(lines[i]);
                    }
                    return sb.ToString();
                }
            case "center": return Center(Py.Str(v), Arg(a, kw, 0, "width", 80L) is long cw ? (int)cw : 80);
            case "format": return Printf.Format(Py.Str(v), a, line);
            case "truncate":
                {
                    var s = Py.Str(v);
                    var length = Arg(a, kw, 0, "length", 255L) is long n ? (int)n : 255;
                    var killwords = Py.Truthy(Arg(a, kw, 1, "killwords", false));
                    var end = Py.Str(Arg(a, kw, 2, "end", "..."));
                    var leeway = Arg(a, kw, 3, "leeway", 5L) is long lw ? (int)lw : 5;
                    if (s.Length <= length + leeway) return s;
                    if (killwords) return s[..(length - end.Length)] + end;
                    var cut = s[..(length - end.Length)];
                    var space = cut.LastIndexOf(' ');
                    return (space >= 0 ? cut[..space] : cut) + end;
                }
        }
        throw new ChatTemplateUnsupportedException($"filter '{name}'", line);
    }

    private static string Escape(string s) =>
        s.Replace("&", "&amp;", StringComparison.Ordinal).Replace("<", "&lt;", StringComparison.Ordinal).Replace(">", "&gt;", StringComparison.Ordinal)
            .Replace("\"", "&#34;", StringComparison.Ordinal).Replace("'", "&#39;", StringComparison.Ordinal);

    /// <summary>Jinja's attribute getter: dotted paths (<c>function.name</c>), digits as indices.</summary>
    private static object? Attribute(object? x, string path, int line)
    {
        foreach (var part in path.Split('.'))
        {
            x = long.TryParse(part, out var i) ? Py.GetItem(x, i, line) : Py.GetItem(x, part, line);
        }
        return x;
    }

    /// <summary>The globals transformers' environment has, besides <c>raise_exception</c> and <c>strftime_now</c>.</summary>
    public static object? Range(List<object?> a, Dictionary<string, object?> kw, int line)
    {
        long Arg(int i) => a[i] is long n ? n : a[i] is bool b ? (b ? 1 : 0) : throw new ChatTemplateRenderException("range() takes integers", line);
        var (start, stop, step) = a.Count switch
        {
            1 => (0L, Arg(0), 1L),
            2 => (Arg(0), Arg(1), 1L),
            3 => (Arg(0), Arg(1), Arg(2)),
            _ => throw new ChatTemplateRenderException("range() takes one to three integers", line),
        };
        if (step == 0) throw new ChatTemplateRenderException("range() arg 3 must not be zero", line);
        var count = step > 0 ? (stop - start + step - 1) / step : (start - stop - step - 1) / -step;
        if (count > Limits.MaxRange) throw new ChatTemplateRenderException($"range() of {count} items: more than the {Limits.MaxRange} the sandbox allows", line);
        var list = new List<object?>();
        for (var i = start; step > 0 ? i < stop : i > stop; i += step) list.Add(i);
        return list;
    }

    public static object? Namespace(List<object?> a, Dictionary<string, object?> kw, int line)
    {
        var ns = new JinjaNamespace();
        foreach (var x in a)
        {
            if (x is Dictionary<string, object?> d) foreach (var (k, v) in d) ns[k] = v;
        }
        foreach (var (k, v) in kw) ns[k] = v;
        return ns;
    }

    public static object? Dict(List<object?> a, Dictionary<string, object?> kw, int line)
    {
        var d = new Dictionary<string, object?>();
        foreach (var x in a)
        {
            if (x is Dictionary<string, object?> src) foreach (var (k, v) in src) d[k] = v;
        }
        foreach (var (k, v) in kw) d[k] = v;
        return d;
    }
}
