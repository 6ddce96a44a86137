namespace Serving.Inference.Constraints;

/// <summary>
/// The deterministic automaton of a <see cref="ByteNfa"/>, built lazily: a DFA state is the set of NFA states (byte
/// edges and the accepting state, after epsilon closure) reachable by the bytes read so far; states and transitions
/// are created on first use and kept. State 0 is dead (no continuation), state 1 the start. Not thread-safe: callers
/// hold the owning <see cref="CompiledGrammar"/>'s lock.
/// </summary>
internal sealed class LazyDfa
{
    public const int Dead = 0;
    public const int StartState = 1;
    private const int Unknown = -1;

    private readonly ByteNfa _nfa;
    private readonly Dictionary<StateKey, int> _ids = [];
    private readonly List<int[]> _sets = [];
    private readonly List<bool> _accepting = [];
    private readonly List<int> _distance = [];
    private int[] _transitions;
    private readonly int[] _mark;
    private int _stamp;
    private readonly Stack<int> _stack = new();
    private readonly List<int> _scratch = [];

    public LazyDfa(ByteNfa nfa)
    {
        _nfa = nfa;
        _mark = new int[nfa.Count];
        _transitions = new int[256 * 64];
        Array.Fill(_transitions, Unknown);
        // Dead state: empty set.
        Intern([]);
        for (var b = 0; b < 256; b++) _transitions[b] = Dead;
        _scratch.Clear();
        Closure(nfa.Start);
        var start = Intern([.. _scratch.Order()]);
        if (start != StartState) throw new InvalidOperationException("Start state must be 1.");
    }

    public int StateCount => _sets.Count;

    public bool IsAccepting(int state) => _accepting[state];

    /// <summary>Fewest bytes from <paramref name="state"/> to an accepting state (int.MaxValue when dead).</summary>
    public int Distance(int state) => _distance[state];

    public int Step(int state, byte b)
    {
        var t = _transitions[state * 256 + b];
        return t != Unknown ? t : Compute(state, b);
    }

    private int Compute(int state, byte b)
    {
        _scratch.Clear();
        _stamp++;
        foreach (var s in _sets[state])
        {
            var next = _nfa.Next[s];
            if (next >= 0 && b >= _nfa.Lo[s] && b <= _nfa.Hi[s]) Closure(next, fresh: false);
        }
        int target;
        if (_scratch.Count == 0)
        {
            target = Dead;
        }
        else
        {
            _scratch.Sort();
            target = Intern([.. _scratch]);
        }
        _transitions[state * 256 + b] = target;
        return target;
    }

    private void Closure(int from, bool fresh = true)
    {
        if (fresh) _stamp++;
        _stack.Push(from);
        while (_stack.Count > 0)
        {
            var s = _stack.Pop();
            if (_mark[s] == _stamp) continue;
            _mark[s] = _stamp;
            if (_nfa.Next[s] >= 0 || s == _nfa.Accept) _scratch.Add(s);
            foreach (var t in _nfa.Epsilon[s]) if (_mark[t] != _stamp) _stack.Push(t);
        }
    }

    private int Intern(int[] set)
    {
        var key = new StateKey(set);
        if (_ids.TryGetValue(key, out var id)) return id;
        id = _sets.Count;
        _ids[key] = id;
        _sets.Add(set);
        var accepting = false;
        var distance = int.MaxValue;
        foreach (var s in set)
        {
            if (s == _nfa.Accept) accepting = true;
            distance = Math.Min(distance, _nfa.Distance[s]);
        }
        _accepting.Add(accepting);
        _distance.Add(distance);
        if ((id + 1) * 256 > _transitions.Length)
        {
            var grown = new int[_transitions.Length * 2];
            Array.Fill(grown, Unknown);
            Array.Copy(_transitions, grown, _transitions.Length);
            _transitions = grown;
        }
        return id;
    }

    private readonly struct StateKey(int[] set) : IEquatable<StateKey>
    {
        private readonly int[] _set = set;
        private readonly int _hash = HashOf(set);

        private static int HashOf(int[] set)
        {
            var h = new HashCode();
            foreach (var s in set) h.Add(s);
            return h.ToHashCode();
        }

        public bool Equals(StateKey other) => _hash == other._hash && _set.AsSpan().SequenceEqual(other._set);

        public override bool Equals(object? obj) => obj is StateKey k && Equals(k);

        public override int GetHashCode() => _hash;
    }
}
