namespace Serving.Inference.Tokenization;

/// <summary>The id → token string table and special flags that every BPE file format builds the same way.</summary>
internal static class TokenTable
{
    /// <summary>
    /// Lays out vocabulary and added tokens by id (added tokens win) and marks as special the added tokens flagged so or
    /// named in <paramref name="declaredSpecials"/>. The table is as long as the largest id + 1.
    /// </summary>
    public static (string?[] Tokens, bool[] Special) Build(
        IReadOnlyDictionary<string, int> vocab, IReadOnlyList<AddedToken> added, IReadOnlySet<string> declaredSpecials)
    {
        int vocabSize = 0;
        foreach (int id in vocab.Values) vocabSize = Math.Max(vocabSize, id + 1);
        foreach (var t in added) vocabSize = Math.Max(vocabSize, t.Id + 1);
        var tokens = new string?[vocabSize];
        foreach (var (token, id) in vocab) tokens[id] ??= token;
        var special = new bool[vocabSize];
        foreach (var t in added)
        {
            tokens[t.Id] = t.Content;
            special[t.Id] = t.Special || declaredSpecials.Contains(t.Content);
        }
        return (tokens, special);
    }
}
