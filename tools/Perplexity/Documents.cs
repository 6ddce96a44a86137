using System.Text.Json;

namespace Serving.Perplexity;

/// <summary>The documents of an input file: each is scored on its own, starting from the prefix.</summary>
public static class Documents
{
    /// <summary>
    /// A <c>.jsonl</c> file: the <c>text</c> field of every non-empty line (the forge's eval splits,
    /// <c>models/demo/eval/*.jsonl</c>); any other file: its paragraphs (separated by blank lines, line breaks inside
    /// kept, CRLF read as LF).
    /// </summary>
    public static List<string> Read(string path)
    {
        if (!path.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase)) return Paragraphs(File.ReadAllText(path));
        var documents = new List<string>();
        var number = 0;
        foreach (var line in File.ReadLines(path))
        {
            number++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            try
            {
                using var doc = JsonDocument.Parse(line);
                if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("text", out var text) || text.ValueKind != JsonValueKind.String)
                {
                    throw new FormatException($"{path}:{number}: a line must be a JSON object with a string \"text\"");
                }
                var value = text.GetString()!;
                if (value.Length > 0) documents.Add(value);
            }
            catch (JsonException e)
            {
                throw new FormatException($"{path}:{number}: not JSON: {e.Message}");
            }
        }
        return documents;
    }

    /// <summary>
    /// The text requests of documents sent as text: a document of at most <paramref name="maxChars"/> characters is one
    /// chunk, exactly as read; a longer one is cut by <see cref="TextChunks.Split"/> (blank lines and the line breaks
    /// at the cuts are then not scored).
    /// </summary>
    public static List<string> Chunks(IEnumerable<string> documents, int maxChars) =>
        documents.SelectMany(d => d.Length <= maxChars ? [d] : TextChunks.Split(d, maxChars)).ToList();

    /// <summary>Paragraphs: runs of non-blank lines, joined with LF.</summary>
    public static List<string> Paragraphs(string text) => TextChunks.Split(text, int.MaxValue);
}
