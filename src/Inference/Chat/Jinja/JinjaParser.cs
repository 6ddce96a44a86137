namespace Serving.Inference.Chat.Jinja;

/// <summary>Builds the statement tree from segments; expressions go to <see cref="JinjaExpressionParser"/>.</summary>
internal sealed class JinjaParser(List<Segment> segments)
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
                case SegmentKind.Text:
                    nodes.Add(new TextNode(seg.Body));
                    break;
                case SegmentKind.Output:
                    nodes.Add(new OutputNode(JinjaExpressionParser.Parse(seg.Body)));
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
                            nodes.Add(ParseSet(seg.Body));
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

    private static SetNode ParseSet(string body)
    {
        var eq = body.IndexOf('=', StringComparison.Ordinal);
        if (eq < 0) throw new FormatException($"chat template: '{{% {body} %}}' (block set, without '=') is not supported");
        var target = body[3..eq].Trim();
        var dot = target.IndexOf('.', StringComparison.Ordinal);
        var (name, attribute) = dot < 0 ? (target, (string?)null) : (target[..dot], target[(dot + 1)..]);
        if (!IsName(name) || attribute is not null && !IsName(attribute)) throw new FormatException($"chat template: cannot assign to '{target}'");
        return new SetNode(name, attribute, JinjaExpressionParser.Parse(body[(eq + 1)..]));
    }

    private ForNode ParseFor(string body)
    {
        var inAt = body.IndexOf(" in ", StringComparison.Ordinal);
        if (inAt < 0) throw new FormatException($"chat template: bad for '{body}'");
        var variables = body[3..inAt].Split(',').Select(v => v.Trim()).ToList();
        if (!variables.All(IsName)) throw new FormatException($"chat template: bad loop variables in '{body}'");
        var iterable = JinjaExpressionParser.Parse(body[(inAt + 4)..]);
        var inner = ParseBody(out var end);
        if (end is not null && FirstWord(end) == "else") throw new FormatException("chat template: for ... else is not supported");
        if (end != "endfor") throw new FormatException("chat template: for without endfor");
        return new ForNode(variables, iterable, inner);
    }

    private static bool IsName(string s) =>
        s.Length > 0 && (char.IsLetter(s[0]) || s[0] == '_') && s.All(c => char.IsLetterOrDigit(c) || c == '_');

    private IfNode ParseIf(string body)
    {
        var branches = new List<(Expr?, List<Node>)>();
        Expr? cond = JinjaExpressionParser.Parse(body[2..]);
        while (true)
        {
            var inner = ParseBody(out var end);
            branches.Add((cond, inner));
            if (end is null) throw new FormatException("chat template: if without endif");
            var word = FirstWord(end);
            if (word == "endif") return new IfNode(branches);
            if (word == "elif") cond = JinjaExpressionParser.Parse(end[4..]);
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
