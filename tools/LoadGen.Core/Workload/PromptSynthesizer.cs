using System.Text;

namespace Serving.LoadGen.Workload;

/// <summary>
/// Synthesises a prompt of about N tokens as N random common English words. Each word here is a single
/// token (with its leading space) in GPT-2's BPE and in Llama-family vocabularies, so a word ≈ a token;
/// a chat template adds a few tokens of its own. Random words also keep prefix caches from flattering
/// the measurement.
/// </summary>
public static class PromptSynthesizer
{
    private static readonly string[] Words =
    [
        "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on",
        "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they",
        "you", "were", "their", "one", "all", "we", "can", "her", "has", "there", "been", "if", "more",
        "when", "will", "would", "who", "so", "no", "time", "people", "year", "way", "day", "man", "thing",
        "woman", "life", "child", "world", "school", "state", "family", "group", "country", "problem",
        "hand", "part", "place", "case", "week", "company", "system", "program", "question", "work",
        "number", "night", "point", "home", "water", "room", "mother", "area", "money", "story", "fact",
        "month", "lot", "right", "study", "book", "eye", "job", "word", "business", "issue", "side", "kind",
        "head", "house", "service", "friend", "father", "power", "hour", "game", "line", "end", "member",
        "law", "car", "city", "name", "team", "minute", "idea", "kid", "body", "back", "face", "level",
        "office", "door", "health", "person", "art", "war", "history", "party", "result", "change",
        "morning", "reason", "research", "girl", "guy", "moment", "air", "teacher", "force", "education",
    ];

    /// <summary>A prompt of <paramref name="tokens"/> words drawn from <paramref name="rng"/>.</summary>
    public static string Synthesize(int tokens, DeterministicRandom rng)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        var sb = new StringBuilder(tokens * 6);
        for (int i = 0; i < tokens; i++)
        {
            if (i > 0)
            {
                sb.Append(' ');
            }

            sb.Append(Words[rng.NextInt(0, Words.Length)]);
        }

        return sb.ToString();
    }

    /// <summary>Approximate token count of a prompt: its whitespace-separated words.</summary>
    public static int EstimateTokens(string prompt) =>
        prompt.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).Length;
}
