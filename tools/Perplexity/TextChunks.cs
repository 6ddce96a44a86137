using System.Text;

namespace Serving.Perplexity;

/// <summary>Cuts a text into the chunks that are scored one request each.</summary>
public static class TextChunks
{
    /// <summary>
    /// Paragraphs (separated by blank lines), each cut at line breaks (a line at spaces) into pieces of at most
    /// <paramref name="maxChars"/> characters. Line breaks inside a piece are kept; the blank lines between paragraphs
    /// and the line breaks where a paragraph is cut are not scored.
    /// </summary>
    public static List<string> Split(string text, int maxChars)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxChars, 1);
        var chunks = new List<string>();
        var current = new StringBuilder();
        void Flush()
        {
            if (current.Length > 0) chunks.Add(current.ToString());
            current.Clear();
        }
        foreach (var raw in text.ReplaceLineEndings("\n").Split('\n'))
        {
            if (string.IsNullOrWhiteSpace(raw))
            {
                Flush();
                continue;
            }
            var first = true;
            foreach (var piece in Pieces(raw, maxChars))
            {
                // The pieces of a cut line are never joined again (that would put a line break where a space was).
                if (!first || (long)current.Length + 1 + piece.Length > maxChars) Flush();
                if (current.Length > 0) current.Append('\n');
                current.Append(piece);
                first = false;
            }
        }
        Flush();
        return chunks;
    }

    /// <summary>A line, cut at spaces (or anywhere, for a run without one) into pieces of at most <paramref name="maxChars"/>.</summary>
    private static IEnumerable<string> Pieces(string line, int maxChars)
    {
        var start = 0;
        while (line.Length - start > maxChars)
        {
            var cut = line.LastIndexOf(' ', start + maxChars, maxChars);
            if (cut <= start) cut = start + maxChars;
            yield return line[start..cut];
            start = cut;
        }
        yield return line[start..];
    }

    /// <summary>Halves a chunk at the line break (else space) nearest its middle, else at the middle; false for one character.</summary>
    public static bool TryHalve(string chunk, out string first, out string second)
    {
        first = second = "";
        if (chunk.Length < 2) return false;
        var mid = chunk.Length / 2;
        var at = Nearest(chunk, '\n', mid);
        if (at < 0) at = Nearest(chunk, ' ', mid);
        if (at <= 0 || at >= chunk.Length) at = mid;
        first = chunk[..at];
        second = chunk[at..];
        return true;
    }

    private static int Nearest(string s, char c, int mid)
    {
        for (var d = 0; d < s.Length; d++)
        {
            if (mid - d > 0 && s[mid - d] == c) return mid - d;
            if (mid + d < s.Length && s[mid + d] == c) return mid + d;
        }
        return -1;
    }
}
