namespace Serving.Inference.Sampling;

/// <summary>
/// Pipeline stage 4b, top-p: the smallest most-likely set of candidates (order: probability descending, id ascending)
/// whose mass is ≥ p of the total, found without sorting. Exact, not an approximation.
/// </summary>
internal static class NucleusStage
{
    private const int BucketCount = 512;

    // Float bits >> 20 = sign, exponent and 3 mantissa bits; for e in (0, 1] that is at most 0x3F8 (e = 1).
    private const int TopKey = 0x3F8;

    /// <summary>Top-p over the first <paramref name="n"/> candidates (exp weights, renormalised among themselves).</summary>
    public static int FromCandidates(CandidateSet s, int n, float p) =>
        Select(s, 0, n, p * CandidateSet.SumAsDouble(s.Values.AsSpan(0, n)));

    /// <summary>
    /// Top-p over the whole vocabulary's exp weights (<see cref="CandidateSet.Exp"/>). One pass buckets them by their top
    /// float bits (8 buckets per octave) and finds the bucket where the cumulative mass, from the top, crosses p.
    /// Tokens in higher buckets are in the nucleus for certain (they precede every other token in the order); only the
    /// boundary bucket's few tokens go through the weighted quickselect.
    /// </summary>
    public static int FromVocabulary(CandidateSet s, float p)
    {
        Span<double> mass = stackalloc double[BucketCount];
        mass.Clear();
        double total = 0;
        ReadOnlySpan<float> exp = s.Exp;
        for (var i = 0; i < exp.Length; i++)
        {
            var e = exp[i];
            mass[Bucket(e)] += e;
            total += e;
        }
        var target = p * total;
        double above = 0;
        var boundary = BucketCount - 1;
        for (var b = 0; b < BucketCount; b++)
        {
            if (above + mass[b] >= target)
            {
                boundary = b;
                break;
            }
            above += mass[b];
        }

        // Bucket b holds e in [BucketFloor(b), BucketFloor(b - 1)); the last bucket also holds zeros and subnormals.
        var lower = boundary < BucketCount - 1 ? BucketFloor(boundary) : float.Epsilon;
        var upper = boundary > 0 ? BucketFloor(boundary - 1) : float.PositiveInfinity;
        int certain = 0, undecided = 0;
        var back = s.Ids.Length - 1;
        var width = System.Numerics.Vector<float>.Count;
        var low = new System.Numerics.Vector<float>(lower);
        var i0 = 0;
        for (; i0 <= exp.Length - width; i0 += width)
        {
            if (!System.Numerics.Vector.GreaterThanOrEqualAny(new System.Numerics.Vector<float>(exp.Slice(i0, width)), low)) continue;
            for (var j = i0; j < i0 + width; j++) Classify(s, exp[j], j, lower, upper, ref certain, ref undecided, back);
        }
        for (; i0 < exp.Length; i0++) Classify(s, exp[i0], i0, lower, upper, ref certain, ref undecided, back);

        // Undecided tokens were stacked downwards from the end of the arrays: restore id order, then close the gap.
        var stackedIds = s.Ids.AsSpan(back - undecided + 1, undecided);
        var stackedValues = s.Values.AsSpan(back - undecided + 1, undecided);
        stackedIds.Reverse();
        stackedValues.Reverse();
        stackedIds.CopyTo(s.Ids.AsSpan(certain));
        stackedValues.CopyTo(s.Values.AsSpan(certain));
        var need = target - CandidateSet.SumAsDouble(s.Values.AsSpan(0, certain));
        return certain + Select(s, certain, undecided, need);
    }

    private static void Classify(CandidateSet s, float e, int id, float lower, float upper, ref int certain, ref int undecided, int back)
    {
        if (e >= upper)
        {
            s.Ids[certain] = id;
            s.Values[certain++] = e;
        }
        else if (e >= lower)
        {
            s.Ids[back - undecided] = id;
            s.Values[back - undecided] = e;
            undecided++;
        }
    }

    /// <summary>0 for e ≥ 1, growing as e falls by an eighth of an octave per bucket; the last bucket takes the rest, zero included.</summary>
    private static int Bucket(float e)
    {
        var b = TopKey - (BitConverter.SingleToInt32Bits(e) >> 20);
        return b < 0 ? 0 : (b >= BucketCount ? BucketCount - 1 : b);
    }

    /// <summary>Smallest value in bucket <paramref name="b"/> (for b &lt; BucketCount - 1).</summary>
    private static float BucketFloor(int b) => BitConverter.Int32BitsToSingle((TopKey - b) << 20);

    /// <summary>
    /// Moves the nucleus (the smallest prefix, in probability-descending / id-ascending order, whose mass is
    /// ≥ <paramref name="need"/>) to the front of the segment [start, start + n) and returns its length. A weighted
    /// quickselect: expected O(n) instead of sorting; ids make the order strict, so ties neither degrade the partition
    /// nor blur the boundary.
    /// </summary>
    private static int Select(CandidateSet s, int start, int n, double need)
    {
        if (need <= 0) return 0;
        var e = s.Values.AsSpan(start, n);
        var ids = s.Ids.AsSpan(start, n);
        int lo = 0, hi = n;
        while (hi - lo > 16)
        {
            var pivot = MedianOfThree(e, ids, lo, lo + (hi - lo) / 2, hi - 1);
            Swap(e, ids, pivot, hi - 1);
            var pe = e[hi - 1];
            var pid = ids[hi - 1];
            var store = lo;
            double better = 0;
            for (var i = lo; i < hi - 1; i++)
            {
                if (e[i] > pe || (e[i] == pe && ids[i] < pid))
                {
                    better += e[i];
                    Swap(e, ids, i, store);
                    store++;
                }
            }
            Swap(e, ids, store, hi - 1);
            if (better >= need)
            {
                hi = store;
            }
            else if (better + pe >= need)
            {
                return store + 1;
            }
            else
            {
                need -= better + pe;
                lo = store + 1;
            }
        }

        for (var i = lo + 1; i < hi; i++)
        {
            for (var j = i; j > lo && Better(e, ids, j, j - 1); j--) Swap(e, ids, j, j - 1);
        }
        double cumulative = 0;
        for (var i = lo; i < hi; i++)
        {
            cumulative += e[i];
            if (cumulative >= need) return i + 1;
        }
        // Reached only through rounding between summation orders.
        return hi;
    }

    private static bool Better(Span<float> e, Span<int> ids, int i, int j) => e[i] > e[j] || (e[i] == e[j] && ids[i] < ids[j]);

    private static int MedianOfThree(Span<float> e, Span<int> ids, int a, int b, int c)
    {
        if (Better(e, ids, a, b)) return Better(e, ids, b, c) ? b : (Better(e, ids, a, c) ? c : a);
        return Better(e, ids, a, c) ? a : (Better(e, ids, b, c) ? c : b);
    }

    private static void Swap(Span<float> e, Span<int> ids, int i, int j)
    {
        (e[i], e[j]) = (e[j], e[i]);
        (ids[i], ids[j]) = (ids[j], ids[i]);
    }
}
