namespace Serving.Perplexity;

/// <summary>
/// One request of a document scored by tokens: the prompt is the document's ids <c>[Start, End)</c>; the tokens
/// <c>[ScoredFrom, End)</c> are scored, the ones before are context.
/// </summary>
public readonly record struct TokenWindow(int Start, int ScoredFrom, int End)
{
    /// <summary>Tokens sent.</summary>
    public int Length => End - Start;

    /// <summary>Tokens scored.</summary>
    public int Scored => End - ScoredFrom;
}

/// <summary>Cuts a document's token ids into requests that fit the model's context.</summary>
public static class TokenWindows
{
    /// <summary>
    /// Windows of at most <paramref name="maxTokens"/> ids that score every token from <paramref name="contextTokens"/>
    /// on exactly once (the first token of a prompt has no logprob, so at least token 0 is context). The first window
    /// starts at 0; every later one repeats up to <paramref name="overlap"/> ids before its scored part as context (a
    /// sliding window with stride <c>maxTokens − overlap</c>, as in Hugging Face's perplexity guide; overlap 1 is
    /// lm-evaluation-harness's disjoint rolling windows).
    /// </summary>
    /// <param name="length">The document's ids.</param>
    /// <param name="contextTokens">Leading ids that are context only (a prefix such as <c>&lt;|endoftext|&gt;</c>); at least 1 is used.</param>
    /// <param name="maxTokens">Most ids per request (the model's context minus the one position the server keeps for output).</param>
    /// <param name="overlap">Ids of context repeated in front of each later window; 1 to <paramref name="maxTokens"/> − 1.</param>
    public static List<TokenWindow> Plan(int length, int contextTokens, int maxTokens, int overlap)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxTokens, 2);
        ArgumentOutOfRangeException.ThrowIfLessThan(overlap, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(overlap, maxTokens);
        var windows = new List<TokenWindow>();
        var scoredFrom = Math.Max(1, contextTokens);
        if (scoredFrom >= length) return windows;
        if (scoredFrom >= maxTokens)
        {
            throw new ArgumentException($"the context prefix ({contextTokens} tokens) leaves nothing to score in a window of {maxTokens} tokens", nameof(contextTokens));
        }
        var end = Math.Min(length, maxTokens);
        windows.Add(new TokenWindow(0, scoredFrom, end));
        while (end < length)
        {
            var start = end - overlap;
            var next = Math.Min(length, start + maxTokens);
            windows.Add(new TokenWindow(start, end, next));
            end = next;
        }
        return windows;
    }
}
