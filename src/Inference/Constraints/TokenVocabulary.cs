using System.Runtime.CompilerServices;
using Serving.Inference.Tokenization;

namespace Serving.Inference.Constraints;

/// <summary>
/// A tokenizer's vocabulary as constrained decoding walks it: every ordinary token's bytes (byte-level BPE pieces,
/// pieces that end inside a UTF-8 character, byte-fallback bytes), sorted so that tokens sharing a prefix are adjacent
/// and the automaton walk of a shared prefix is done once (<see cref="Lcp"/>). Special tokens and ids without bytes
/// are never allowed under a constraint, except end-of-sequence in accepting states. One instance per tokenizer and
/// model vocabulary size (<see cref="For"/> caches it).
/// </summary>
public sealed class TokenVocabulary
{
    private static readonly ConditionalWeakTable<ITokenizer, Dictionary<int, TokenVocabulary>> Cache = [];

    internal TokenVocabulary(byte[][] bytesById, bool[] special, int vocabSize, int[] eosIds)
    {
        VocabSize = vocabSize;
        EosIds = eosIds;
        var ids = new List<int>();
        for (var id = 0; id < Math.Min(vocabSize, bytesById.Length); id++)
        {
            if (!special[id] && bytesById[id] is { Length: > 0 }) ids.Add(id);
        }
        ids.Sort((a, b) => bytesById[a].AsSpan().SequenceCompareTo(bytesById[b]));
        SortedIds = [.. ids];
        Offsets = new int[SortedIds.Length + 1];
        var total = 0;
        for (var k = 0; k < SortedIds.Length; k++)
        {
            Offsets[k] = total;
            total += bytesById[SortedIds[k]].Length;
        }
        Offsets[^1] = total;
        Bytes = new byte[total];
        Lcp = new int[SortedIds.Length];
        TokenOffset = new int[vocabSize];
        TokenLength = new int[vocabSize];
        Array.Fill(TokenOffset, -1);
        for (var k = 0; k < SortedIds.Length; k++)
        {
            var b = bytesById[SortedIds[k]];
            b.CopyTo(Bytes, Offsets[k]);
            TokenOffset[SortedIds[k]] = Offsets[k];
            TokenLength[SortedIds[k]] = b.Length;
            MaxTokenBytes = Math.Max(MaxTokenBytes, b.Length);
            if (k > 0)
            {
                var prev = bytesById[SortedIds[k - 1]];
                Lcp[k] = b.AsSpan().CommonPrefixLength(prev);
            }
            if (b.Length == 1) SingleBytes[b[0]] = true;
        }
        HasEveryByte = Array.TrueForAll(SingleBytes, x => x);
    }

    /// <summary>Model vocabulary size (the logits' length).</summary>
    public int VocabSize { get; }

    /// <summary>End-of-sequence ids, allowed exactly in accepting states.</summary>
    public int[] EosIds { get; }

    /// <summary>Ordinary token ids in byte order.</summary>
    internal int[] SortedIds { get; }

    /// <summary>Where each sorted token's bytes start in <see cref="Bytes"/> (one more entry: the end).</summary>
    internal int[] Offsets { get; }

    internal byte[] Bytes { get; }

    /// <summary>Bytes shared with the previous sorted token.</summary>
    internal int[] Lcp { get; }

    /// <summary>By id: offset into <see cref="Bytes"/> (-1: never allowed) and length.</summary>
    internal int[] TokenOffset { get; }

    internal int[] TokenLength { get; }

    internal int MaxTokenBytes { get; }

    internal bool[] SingleBytes { get; } = new bool[256];

    /// <summary>Whether every byte is a token of its own: then any live state can finish within its byte distance in tokens.</summary>
    public bool HasEveryByte { get; }

    /// <summary>The vocabulary of <paramref name="tokenizer"/> for a model with <paramref name="vocabSize"/> logits (cached).</summary>
    public static TokenVocabulary For(ITokenizer tokenizer, int vocabSize, int[] eosIds)
    {
        var perSize = Cache.GetValue(tokenizer, _ => []);
        lock (perSize)
        {
            if (perSize.TryGetValue(vocabSize, out var v) && v.EosIds.AsSpan().SequenceEqual(eosIds)) return v;
            var table = tokenizer.CreateStreamingDecoder().Table;
            var bytes = new byte[table.Count][];
            var special = new bool[table.Count];
            for (var id = 0; id < table.Count; id++)
            {
                bytes[id] = table.Get(id, skipSpecial: false).ToArray();
                special[id] = table.IsSpecial(id);
            }
            v = new TokenVocabulary(bytes, special, vocabSize, eosIds);
            perSize[vocabSize] = v;
            return v;
        }
    }
}
