using System.Collections.Concurrent;
using System.Text;

namespace Serving.Inference.Tokenization;

/// <summary>
/// Rank-based BPE over one pre-token, as Hugging Face <c>tokenizers</c> does it: start from characters (Unicode scalars),
/// repeatedly merge the adjacent pair with the lowest merge rank (leftmost on ties). Results are cached per word.
/// </summary>
internal sealed class BpeModel
{
    private const int MaxCachedWordLength = 256;
    private const int MaxCacheEntries = 100_000;

    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<long, (int Rank, int NewId)> _merges;
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    private readonly int[]? _byteFallbackIds; // <0xNN> ids, when byte_fallback is on

    public BpeModel(
        Dictionary<string, int> vocab,
        Dictionary<long, (int Rank, int NewId)> merges,
        int? unkId = null,
        bool fuseUnk = false,
        bool byteFallback = false,
        bool ignoreMerges = false,
        string? continuingSubwordPrefix = null,
        string? endOfWordSuffix = null)
    {
        _vocab = vocab;
        _merges = merges;
        UnkId = unkId;
        FuseUnk = fuseUnk;
        IgnoreMerges = ignoreMerges;
        ContinuingSubwordPrefix = string.IsNullOrEmpty(continuingSubwordPrefix) ? null : continuingSubwordPrefix;
        EndOfWordSuffix = string.IsNullOrEmpty(endOfWordSuffix) ? null : endOfWordSuffix;
        if (byteFallback)
        {
            _byteFallbackIds = new int[256];
            for (int b = 0; b < 256; b++)
                _byteFallbackIds[b] = vocab.TryGetValue($"<0x{b:X2}>", out int id) ? id : -1;
        }
    }

    public int? UnkId { get; }
    public bool FuseUnk { get; }
    public bool IgnoreMerges { get; }
    public string? ContinuingSubwordPrefix { get; }
    public string? EndOfWordSuffix { get; }
    public IReadOnlyDictionary<string, int> Vocab => _vocab;

    public static long PairKey(int left, int right) => ((long)left << 32) | (uint)right;

    /// <summary>Appends the ids of one pre-token (already in the model's alphabet) to <paramref name="output"/>.</summary>
    public void EncodeWord(string word, List<int> output)
    {
        if (word.Length == 0) return;
        if (_cache.TryGetValue(word, out var cached))
        {
            output.AddRange(cached);
            return;
        }
        int[] ids = EncodeWordUncached(word);
        if (word.Length <= MaxCachedWordLength && _cache.Count < MaxCacheEntries) _cache.TryAdd(word, ids);
        output.AddRange(ids);
    }

    private int[] EncodeWordUncached(string word)
    {
        if (IgnoreMerges && _vocab.TryGetValue(word, out int whole)) return [whole];

        // Initial symbols: one per Unicode scalar (with prefix/suffix), byte fallback or unk for unknown ones.
        var ids = new List<int>(word.Length);
        int i = 0;
        bool lastWasUnk = false;
        while (i < word.Length)
        {
            int len = char.IsHighSurrogate(word[i]) && i + 1 < word.Length && char.IsLowSurrogate(word[i + 1]) ? 2 : 1;
            bool first = i == 0, last = i + len == word.Length;
            string s = word.Substring(i, len);
            string key = s;
            if (!first && ContinuingSubwordPrefix is not null) key = ContinuingSubwordPrefix + key;
            if (last && EndOfWordSuffix is not null) key += EndOfWordSuffix;
            i += len;

            if (_vocab.TryGetValue(key, out int id))
            {
                ids.Add(id);
                lastWasUnk = false;
                continue;
            }
            if (_byteFallbackIds is not null && TryAddBytes(s, ids))
            {
                lastWasUnk = false;
                continue;
            }
            if (UnkId is int unk)
            {
                if (!(FuseUnk && lastWasUnk)) ids.Add(unk);
                lastWasUnk = true;
            }
            // No unk token: Hugging Face drops the character silently; so do we.
        }
        if (ids.Count < 2 || _merges.Count == 0) return ids.ToArray();
        return Merge(ids);
    }

    private bool TryAddBytes(string s, List<int> ids)
    {
        Span<byte> buf = stackalloc byte[8];
        int n = Encoding.UTF8.GetBytes(s, buf);
        for (int k = 0; k < n; k++) if (_byteFallbackIds![buf[k]] < 0) return false;
        for (int k = 0; k < n; k++) ids.Add(_byteFallbackIds![buf[k]]);
        return true;
    }

    private int[] Merge(List<int> initial)
    {
        int n = initial.Count;
        var id = initial.ToArray();
        var prev = new int[n];
        var next = new int[n];
        for (int k = 0; k < n; k++) { prev[k] = k - 1; next[k] = k + 1 < n ? k + 1 : -1; }

        // Priority (rank, left position); stale entries are skipped when popped.
        var queue = new PriorityQueue<(int Left, int LeftId, int RightId), (int Rank, int Pos)>(n);
        for (int k = 0; k + 1 < n; k++) TryEnqueue(queue, k, id[k], id[k + 1]);

        int alive = n;
        while (queue.TryDequeue(out var e, out _))
        {
            int left = e.Left;
            if (id[left] != e.LeftId) continue;
            int right = next[left];
            if (right < 0 || id[right] != e.RightId) continue;
            var m = _merges[PairKey(e.LeftId, e.RightId)];
            id[left] = m.NewId;
            id[right] = -1;
            int after = next[right];
            next[left] = after;
            if (after >= 0) prev[after] = left;
            alive--;
            if (prev[left] >= 0) TryEnqueue(queue, prev[left], id[prev[left]], id[left]);
            if (after >= 0) TryEnqueue(queue, left, id[left], id[after]);
        }

        var result = new int[alive];
        int r = 0;
        for (int k = 0; k >= 0; k = next[k]) result[r++] = id[k];
        return result;
    }

    private void TryEnqueue(PriorityQueue<(int, int, int), (int, int)> queue, int left, int leftId, int rightId)
    {
        if (_merges.TryGetValue(PairKey(leftId, rightId), out var m)) queue.Enqueue((left, leftId, rightId), (m.Rank, left));
    }
}
