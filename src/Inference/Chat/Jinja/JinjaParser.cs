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
                            var eq = seg.Body.IndexOf('=', StringComparison.Ordinal);
                            if (eq < 0) throw new FormatException($"chat template: bad set '{seg.Body}'");
                            nodes.Add(new SetNode(seg.Body[3..eq].Trim(), JinjaExpressionParser.Parse(seg.Body[(eq + 1)..])));
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
        var iterable = JinjaExpressionParser.Parse(body[(inAt + 4)..]);
        var inner = ParseBody(out var end);
        if (end != "endfor") throw new FormatException("chat template: for without endfor");
        return new ForNode(variable, iterable, inner);
    }

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
