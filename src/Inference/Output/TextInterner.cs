namespace Serving.Inference.Output;

/// <summary>
/// The text of token events, interned: a token's text is nearly always one of a few thousand short strings, so each is
/// allocated once and then found by content (no allocation per token). Bounded: past <see cref="MaxEntries"/> entries,
/// or for long texts, a new string is made each time. One per scheduler; scheduler thread only.
/// </summary>
public sealed class TextInterner
{
    private const int MaxEntries = 1 << 16;
    private const int MaxLength = 32;
    private readonly Dictionary<string, string> _texts = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string>.AlternateLookup<ReadOnlySpan<char>> _lookup;

    public TextInterner() => _lookup = _texts.GetAlternateLookup<ReadOnlySpan<char>>();

    /// <summary>The interned string equal to <paramref name="text"/>.</summary>
    public string Intern(ReadOnlySpan<char> text)
    {
        if (_lookup.TryGetValue(text, out var s)) return s;
        s = new string(text);
        if (text.Length <= MaxLength && _texts.Count < MaxEntries) _texts.Add(s, s);
        return s;
    }
}
