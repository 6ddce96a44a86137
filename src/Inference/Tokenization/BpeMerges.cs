namespace Serving.Inference.Tokenization;

/// <summary>Turns merge lists (token pairs in rank order) into the lookup <see cref="BpeModel"/> uses, validating every token.</summary>
internal static class BpeMerges
{
    public static Dictionary<long, (int Rank, int NewId)> Build(
        IReadOnlyList<(string Left, string Right)> merges,
        IReadOnlyDictionary<string, int> vocab,
        string? continuingSubwordPrefix,
        string file)
    {
        var result = new Dictionary<long, (int, int)>(merges.Count);
        int prefixLength = string.IsNullOrEmpty(continuingSubwordPrefix) ? 0 : continuingSubwordPrefix.Length;
        for (int rank = 0; rank < merges.Count; rank++)
        {
            var (a, b) = merges[rank];
            if (!vocab.TryGetValue(a, out int aId))
                throw new TokenizerFormatException(file, $"merge #{rank} ('{a}' '{b}') refers to unknown token '{a}'");
            if (!vocab.TryGetValue(b, out int bId))
                throw new TokenizerFormatException(file, $"merge #{rank} ('{a}' '{b}') refers to unknown token '{b}'");
            string rightPart = prefixLength > 0 && b.StartsWith(continuingSubwordPrefix!, StringComparison.Ordinal) ? b[prefixLength..] : b;
            string merged = a + rightPart;
            if (!vocab.TryGetValue(merged, out int newId))
                throw new TokenizerFormatException(file, $"merge #{rank} ('{a}' '{b}') produces '{merged}', which is not in the vocabulary");
            // Later duplicates win, as in Hugging Face and GPT-2's encoder.py (both build a map from the list).
            result[BpeModel.PairKey(aId, bId)] = (rank, newId);
        }
        return result;
    }

    /// <summary>Parses "left right" (one space); returns false when the line is not exactly two tokens.</summary>
    public static bool TryParseLine(string line, out (string Left, string Right) pair)
    {
        int space = line.IndexOf(' ');
        if (space <= 0 || space == line.Length - 1 || line.IndexOf(' ', space + 1) >= 0)
        {
            pair = default;
            return false;
        }
        pair = (line[..space], line[(space + 1)..]);
        return true;
    }
}
