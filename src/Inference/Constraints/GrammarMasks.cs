using System.Runtime.CompilerServices;

namespace Serving.Inference.Constraints;

/// <summary>
/// The token masks of one <see cref="Grammar"/> over one <see cref="TokenVocabulary"/>: per automaton state, the
/// tokens whose bytes keep the output a prefix of some accepted string, computed once by walking the byte-sorted
/// vocabulary against the lazy DFA (shared prefixes walked once, dead prefixes skipped) and cached. End-of-sequence is
/// allowed exactly in accepting states. Near the end of a row's budget (<c>max_tokens</c>, context) only tokens that
/// leave a state from which the grammar can still be finished in time are allowed (cached per state and budget), so
/// an output stops inside its budget whenever its grammar can. Thread-safe (one lock; the scheduler is the only
/// caller on the hot path, so it is uncontended).
/// </summary>
public sealed class GrammarMasks
{
    private readonly LazyDfa _dfa;
    private readonly TokenVocabulary _vocab;
    private readonly object _lock = new();
    private StateMask?[] _masks = new StateMask?[64];
    private readonly Dictionary<long, StateMask> _closing = [];
    // Distinct id lists, shared by the states whose masks are equal (counting states of a minLength string or a
    // maxItems array all allow the same tokens): one array stays in the cache instead of one per state.
    private readonly Dictionary<int[], int[]> _idLists = new(IdListComparer.Instance);
    private int[] _depthStates;

    internal GrammarMasks(Grammar grammar, TokenVocabulary vocab)
    {
        Grammar = grammar;
        _vocab = vocab;
        _dfa = new LazyDfa(grammar.Nfa);
        _depthStates = new int[vocab.MaxTokenBytes + 1];
    }

    public Grammar Grammar { get; }

    public TokenVocabulary Vocabulary => _vocab;

    /// <summary>The state before any output.</summary>
    public int Start => LazyDfa.StartState;

    /// <summary>Automaton states created so far (grows as outputs explore the grammar).</summary>
    public int StateCount
    {
        get { lock (_lock) return _dfa.StateCount; }
    }

    public bool IsAccepting(int state)
    {
        lock (_lock) return _dfa.IsAccepting(state);
    }

    /// <summary>Whether <paramref name="state"/> accepts and no byte can follow (only end-of-sequence remains).</summary>
    public bool IsComplete(int state)
    {
        lock (_lock) return _dfa.IsAccepting(state) && Mask(state).Count == 0;
    }

    /// <summary>The state after <paramref name="token"/>'s bytes; <see cref="LazyDfa.Dead"/> (0) when they leave the grammar.</summary>
    public int Advance(int state, int token)
    {
        if ((uint)token >= (uint)_vocab.VocabSize) return LazyDfa.Dead;
        var offset = _vocab.TokenOffset[token];
        if (offset < 0) return LazyDfa.Dead;
        var end = offset + _vocab.TokenLength[token];
        lock (_lock)
        {
            for (var i = offset; i < end && state != LazyDfa.Dead; i++) state = _dfa.Step(state, _vocab.Bytes[i]);
        }
        return state;
    }

    /// <summary>Whether <paramref name="token"/> is allowed in <paramref name="state"/> (end-of-sequence included).</summary>
    public bool Allows(int state, int token)
    {
        if (Array.IndexOf(_vocab.EosIds, token) >= 0) return IsAccepting(state);
        return Advance(state, token) != LazyDfa.Dead;
    }

    /// <summary>
    /// Writes <paramref name="logits"/> into <paramref name="destination"/> with every token not allowed in
    /// <paramref name="state"/> set to -inf. <paramref name="budget"/>: tokens the row may still emit, this one and
    /// end-of-sequence included (int.MaxValue: unbounded). Allocates nothing once the state's mask is cached.
    /// </summary>
    public void Apply(int state, int budget, ReadOnlySpan<float> logits, Span<float> destination)
    {
        StateMask mask;
        bool accepting;
        lock (_lock)
        {
            mask = Mask(state);
            accepting = _dfa.IsAccepting(state);
            // Every further token must leave a state that finishes within what is left after it (EOS included).
            var threshold = budget == int.MaxValue ? int.MaxValue : budget - 2;
            if (mask.MaxDistanceAfter > threshold)
            {
                // No token finishes in time: the answer is known without a walk (only EOS if accepting, else the
                // full mask, as Closing decides), so a row far from its end — e.g. a long minLength — costs nothing more.
                mask = mask.MinDistanceAfter > threshold ? (accepting ? OnlyEnd : mask) : Closing(state, Math.Max(threshold, -1), mask, accepting);
            }
        }
        if (mask.Inverted)
        {
            logits.CopyTo(destination);
            foreach (var id in mask.Ids) destination[id] = float.NegativeInfinity;
        }
        else
        {
            destination.Fill(float.NegativeInfinity);
            foreach (var id in mask.Ids) destination[id] = logits[id];
        }
        foreach (var eos in _vocab.EosIds)
        {
            if ((uint)eos < (uint)destination.Length) destination[eos] = accepting ? logits[eos] : float.NegativeInfinity;
        }
    }

    /// <summary>Allowed ordinary tokens in <paramref name="state"/> (EOS not included), for tests and benchmarks.</summary>
    public int[] AllowedTokens(int state)
    {
        lock (_lock)
        {
            var mask = Mask(state);
            if (!mask.Inverted) return (int[])mask.Ids.Clone();
            var banned = new HashSet<int>(mask.Ids);
            var list = new List<int>();
            foreach (var id in _vocab.SortedIds) if (!banned.Contains(id)) list.Add(id);
            list.Sort();
            return [.. list];
        }
    }

    private StateMask Mask(int state)
    {
        if (state >= _masks.Length) Array.Resize(ref _masks, Math.Max(state + 1, _masks.Length * 2));
        return _masks[state] ??= Shared(Compute(state, int.MaxValue));
    }

    private StateMask Closing(int state, int threshold, StateMask full, bool accepting)
    {
        var key = ((long)state << 32) | (uint)threshold;
        if (_closing.TryGetValue(key, out var m)) return m;
        m = threshold < 0 ? OnlyEnd : Shared(Compute(state, threshold));
        // Nothing finishes in time and EOS is not allowed either: the row will run out of budget whatever it does, so
        // keep it inside the grammar (finish reason "length") rather than leave no token at all.
        if (m.Count == 0 && !accepting) m = full;
        _closing[key] = m;
        return m;
    }

    /// <summary>Walks the sorted vocabulary from <paramref name="state"/>; keeps tokens whose end state is live and at most <paramref name="threshold"/> bytes from acceptance.</summary>
    private StateMask Compute(int state, int threshold)
    {
        var v = _vocab;
        var ids = v.SortedIds;
        var bytes = v.Bytes;
        var depth = _depthStates;
        depth[0] = state;
        var valid = 0;
        var deadAt = -1;
        var allowed = new List<int>();
        var maxDistance = 0;
        var minDistance = int.MaxValue;
        for (var k = 0; k < ids.Length; k++)
        {
            var p = v.Lcp[k];
            if (deadAt >= 0 && deadAt < p) continue;
            deadAt = -1;
            var d = Math.Min(p, valid);
            var s = depth[d];
            var offset = v.Offsets[k];
            var length = v.Offsets[k + 1] - offset;
            for (var j = d; j < length; j++)
            {
                s = _dfa.Step(s, bytes[offset + j]);
                if (s == LazyDfa.Dead)
                {
                    deadAt = j;
                    break;
                }
                depth[j + 1] = s;
            }
            if (deadAt >= 0)
            {
                valid = deadAt;
                continue;
            }
            valid = length;
            var distance = _dfa.Distance(s);
            if (distance > threshold) continue;
            allowed.Add(ids[k]);
            maxDistance = Math.Max(maxDistance, distance);
            minDistance = Math.Min(minDistance, distance);
        }
        allowed.Sort();
        if (allowed.Count * 2 <= v.VocabSize) return new StateMask([.. allowed], false, maxDistance, minDistance, allowed.Count);
        // Mostly allowed: store the banned ids instead (specials and ids without bytes included; EOS is set separately).
        var banned = new List<int>(v.VocabSize - allowed.Count);
        var a = 0;
        for (var id = 0; id < v.VocabSize; id++)
        {
            if (a < allowed.Count && allowed[a] == id) { a++; continue; }
            banned.Add(id);
        }
        return new StateMask([.. banned], true, maxDistance, minDistance, allowed.Count);
    }

    /// <summary><paramref name="m"/> with its id list replaced by an equal one already held, if any.</summary>
    private StateMask Shared(StateMask m)
    {
        if (m.Ids.Length == 0) return m;
        if (_idLists.TryGetValue(m.Ids, out var ids)) return m with { Ids = ids };
        _idLists[m.Ids] = m.Ids;
        return m;
    }

    /// <summary>Id lists compared by content (only when a mask is first computed).</summary>
    private sealed class IdListComparer : IEqualityComparer<int[]>
    {
        public static readonly IdListComparer Instance = new();

        public bool Equals(int[]? x, int[]? y) => x is not null && y is not null && x.AsSpan().SequenceEqual(y);

        public int GetHashCode(int[] obj)
        {
            var hash = new HashCode();
            hash.AddBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(obj.AsSpan()));
            return hash.ToHashCode();
        }
    }

    /// <summary>No ordinary token (end-of-sequence is set apart, in accepting states).</summary>
    private static readonly StateMask OnlyEnd = new([], false, -1, int.MaxValue, 0);

    /// <summary>
    /// One state's mask: allowed ids, or (<see cref="Inverted"/>) banned ids when most tokens are allowed;
    /// <see cref="MaxDistanceAfter"/> / <see cref="MinDistanceAfter"/>: the largest / smallest distance to acceptance
    /// (bytes) over the allowed tokens' end states (int.MaxValue as the minimum when none is allowed).
    /// </summary>
    private sealed record StateMask(int[] Ids, bool Inverted, int MaxDistanceAfter, int MinDistanceAfter, int Count);
}
