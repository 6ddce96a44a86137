namespace Serving.Inference.Tokenization;

/// <summary>A token matched verbatim in input text before any normalisation (Hugging Face <c>added_tokens</c>).</summary>
internal sealed record AddedToken(string Content, int Id, bool Special, bool LStrip = false, bool RStrip = false);

/// <summary>A run of plain text (Id = -1) or one added token found in the input.</summary>
internal readonly record struct Segment(string? Text, int Id, bool AtTextStart);

/// <summary>Finds added tokens in text, leftmost first and longest at a position, honouring lstrip/rstrip.</summary>
internal sealed class AddedTokenSplitter
{
    private readonly Dictionary<char, AddedToken[]> _byFirstChar;

    public AddedTokenSplitter(IEnumerable<AddedToken> tokens)
    {
        _byFirstChar = tokens
            .Where(t => t.Content.Length > 0)
            .GroupBy(t => t.Content[0])
            .ToDictionary(g => g.Key, g => g.OrderByDescending(t => t.Content.Length).ToArray());
    }

    public bool IsEmpty => _byFirstChar.Count == 0;

    public void Split(string text, List<Segment> output)
    {
        output.Clear();
        if (IsEmpty)
        {
            if (text.Length > 0) output.Add(new Segment(text, -1, true));
            return;
        }
        int plainStart = 0;
        int i = 0;
        while (i < text.Length)
        {
            var match = MatchAt(text, i);
            if (match is null)
            {
                i++;
                continue;
            }
            int start = i, end = i + match.Content.Length;
            if (match.LStrip) while (start > plainStart && char.IsWhiteSpace(text[start - 1])) start--;
            if (match.RStrip) while (end < text.Length && char.IsWhiteSpace(text[end])) end++;
            if (start > plainStart) output.Add(new Segment(text[plainStart..start], -1, plainStart == 0));
            output.Add(new Segment(null, match.Id, start == 0));
            plainStart = i = end;
        }
        if (plainStart < text.Length) output.Add(new Segment(text[plainStart..], -1, plainStart == 0));
    }

    private AddedToken? MatchAt(string text, int i)
    {
        if (!_byFirstChar.TryGetValue(text[i], out var candidates)) return null;
        foreach (var t in candidates)
            if (i + t.Content.Length <= text.Length && string.CompareOrdinal(text, i, t.Content, 0, t.Content.Length) == 0) return t;
        return null;
    }
}
