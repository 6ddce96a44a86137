namespace Serving.Inference.Constraints;

/// <summary>
/// A Thompson NFA over bytes compiled from an <see cref="Rx"/>. Each state either has one byte-range edge
/// (<see cref="Lo"/>..<see cref="Hi"/> → <see cref="Next"/>) or epsilon edges, or is the single accepting state. Built
/// backwards (each node is compiled in front of its continuation), so a list's item or an object's member needs no
/// copy per position. Immutable once built; <see cref="Distance"/> is the fewest bytes from a state to acceptance.
/// </summary>
internal sealed class ByteNfa
{
    /// <summary>Most states a grammar may compile to; larger schemas are refused.</summary>
    public const int MaxStates = 400_000;

    private readonly List<byte> _lo = [];
    private readonly List<byte> _hi = [];
    private readonly List<int> _next = [];          // byte edge target, or -1
    private readonly List<int[]> _eps = [];

    private ByteNfa() { }

    public int Count => _next.Count;
    public int Start { get; private set; }
    public int Accept { get; private set; }
    public byte[] Lo { get; private set; } = [];
    public byte[] Hi { get; private set; } = [];
    public int[] Next { get; private set; } = [];
    public int[][] Epsilon { get; private set; } = [];
    public int[] Distance { get; private set; } = [];

    /// <summary>Compiles <paramref name="rx"/>; throws <see cref="ConstraintException"/> when it matches nothing or is too large.</summary>
    public static ByteNfa Compile(Rx rx, string path = "$")
    {
        if (rx.IsNothing) throw new ConstraintException(path, null, "The constraint cannot match any output.");
        if (rx.Size > MaxStates) throw new ConstraintException(path, null, $"The constraint is too large to compile (about {rx.Size} automaton states, the limit is {MaxStates}).");
        var nfa = new ByteNfa();
        nfa.Accept = nfa.NewState();
        nfa.Start = nfa.Build(rx, nfa.Accept);
        nfa.Lo = [.. nfa._lo];
        nfa.Hi = [.. nfa._hi];
        nfa.Next = [.. nfa._next];
        nfa.Epsilon = [.. nfa._eps];
        nfa.Distance = nfa.Distances();
        return nfa;
    }

    private int NewState()
    {
        if (_next.Count >= MaxStates) throw new ConstraintException("$", null, $"The constraint is too large to compile (over {MaxStates} automaton states).");
        _lo.Add(0);
        _hi.Add(0);
        _next.Add(-1);
        _eps.Add([]);
        return _next.Count - 1;
    }

    private int ByteState(byte lo, byte hi, int target)
    {
        var s = NewState();
        _lo[s] = lo;
        _hi[s] = hi;
        _next[s] = target;
        return s;
    }

    private int Split(params int[] targets)
    {
        var s = NewState();
        _eps[s] = targets;
        return s;
    }

    /// <summary>Compiles <paramref name="rx"/> in front of <paramref name="target"/> and returns its start state.</summary>
    private int Build(Rx rx, int target)
    {
        switch (rx)
        {
            case ByteRangeRx b:
                return ByteState(b.Lo, b.Hi, target);
            case SeqRx s:
                for (var i = s.Parts.Length - 1; i >= 0; i--) target = Build(s.Parts[i], target);
                return target;
            case AltRx a:
                {
                    var starts = new int[a.Parts.Length];
                    for (var i = 0; i < starts.Length; i++) starts[i] = Build(a.Parts[i], target);
                    return Split(starts);
                }
            case RepeatRx r:
                {
                    var t = target;
                    if (r.Max is int max)
                    {
                        // Nested optionals: after each optional copy the rest may still be skipped.
                        t = OptionalChain(r.Item, max - r.Min, target);
                    }
                    else
                    {
                        var loop = Split();
                        var body = Build(r.Item, loop);
                        _eps[loop] = [body, target];
                        t = loop;
                    }
                    for (var i = 0; i < r.Min; i++) t = Build(r.Item, t);
                    return t;
                }
            case ListRx l:
                return BuildList(l, target);
            case MembersRx m:
                return BuildMembers(m, target);
            default:
                throw new InvalidOperationException($"Cannot compile {rx.GetType().Name}.");
        }
    }

    private int OptionalChain(Rx item, int count, int target)
    {
        var t = target;
        for (var i = 0; i < count; i++) t = Split(Build(item, t), target);
        return t;
    }

    private int BuildList(ListRx l, int target)
    {
        // After k items: either stop (k ≥ min) or, below max, separator + another item.
        if (l.Max is null)
        {
            var min = Math.Max(l.Min, 1);
            // Loop tail: after at least `min` items, (sep item)* then target.
            var loop = Split();
            var sepThenItem = ByteState(l.Separator, l.Separator, Build(l.Item, loop));
            _eps[loop] = [sepThenItem, target];
            var t = loop;
            for (var i = 1; i < min; i++) t = ByteState(l.Separator, l.Separator, Build(l.Item, t));
            t = Build(l.Item, t);
            return l.Min == 0 ? Split(t, target) : t;
        }
        var max = l.Max.Value;
        if (max == 0) return target;
        // Positions k = max..1: state "after k items".
        var after = target;
        for (var k = max - 1; k >= 1; k--)
        {
            var more = ByteState(l.Separator, l.Separator, Build(l.Item, after));
            after = k >= l.Min ? Split(more, target) : more;
        }
        var first = Build(l.Item, after);
        return l.Min == 0 ? Split(first, target) : first;
    }

    private int BuildMembers(MembersRx m, int target)
    {
        var n = m.Members.Length;
        var comma = (byte)',';
        // withComma[i]: members i.. after something was written; bare[i]: members i.. with nothing written yet.
        var withComma = target;
        var bare = target;
        for (var i = n - 1; i >= 0; i--)
        {
            var restAfter = withComma;
            var take = ByteState(comma, comma, Build(m.Members[i], restAfter));
            var takeFirst = Build(m.Members[i], restAfter);
            var newWith = m.Required[i] ? take : Split(take, withComma);
            var newBare = m.Required[i] ? takeFirst : Split(takeFirst, bare);
            withComma = newWith;
            bare = newBare;
        }
        return bare;
    }

    /// <summary>Fewest bytes from each state to acceptance (0-1 BFS over reversed edges).</summary>
    private int[] Distances()
    {
        var n = Count;
        var reverseByte = new List<int>[n];
        var reverseEps = new List<int>[n];
        for (var s = 0; s < n; s++)
        {
            if (Next[s] >= 0) (reverseByte[Next[s]] ??= []).Add(s);
            foreach (var t in Epsilon[s]) (reverseEps[t] ??= []).Add(s);
        }
        var dist = new int[n];
        Array.Fill(dist, int.MaxValue);
        var deque = new LinkedList<int>();
        dist[Accept] = 0;
        deque.AddFirst(Accept);
        while (deque.Count > 0)
        {
            var s = deque.First!.Value;
            deque.RemoveFirst();
            var d = dist[s];
            if (reverseEps[s] is { } eps)
            {
                foreach (var p in eps)
                {
                    if (dist[p] > d) { dist[p] = d; deque.AddFirst(p); }
                }
            }
            if (reverseByte[s] is { } bytes)
            {
                foreach (var p in bytes)
                {
                    if (dist[p] > d + 1) { dist[p] = d + 1; deque.AddLast(p); }
                }
            }
        }
        return dist;
    }
}
