using System.Numerics.Tensors;

namespace Serving.Inference.Sampling;

/// <summary>
/// Pipeline stage 4a, top-k: candidates = tokens whose processed logit is ≥ the k-th largest (ties at the k-th value
/// kept, as HF and vLLM do), their values turned into exp(w − max). Bounded heap for k ≤ <see cref="TopSelection.HeapLimit"/>,
/// quickselect above.
/// </summary>
internal static class TopKStage
{
    public static int Apply(ReadOnlySpan<float> w, int k, float max, CandidateSet s)
    {
        var kth = TopSelection.KthLargest(w, k, s.Heap, s.Exp);
        var n = s.Gather(w, kth);
        var e = s.Values.AsSpan(0, n);
        TensorPrimitives.Subtract(e, max, e);
        TensorPrimitives.Exp(e, e);
        return n;
    }
}

/// <summary>Pipeline stage 4c, min-p: keep candidates with p ≥ min_p × p_max (values are exp weights).</summary>
internal static class MinPStage
{
    public static int Apply(CandidateSet s, int n, float minP)
    {
        var e = s.Values.AsSpan(0, n);
        var threshold = minP * TensorPrimitives.Max(e);
        var kept = 0;
        for (var i = 0; i < n; i++)
        {
            if (e[i] >= threshold)
            {
                s.Ids[kept] = s.Ids[i];
                s.Values[kept++] = e[i];
            }
        }
        return kept;
    }

    /// <summary>min-p without top-k or top-p: candidates straight from the vocabulary's exp weights.</summary>
    public static int FromVocabulary(CandidateSet s, float minP) =>
        s.Gather(s.Exp, MathF.Max(minP * TensorPrimitives.Max(s.Exp), float.Epsilon));
}

/// <summary>
/// Pipeline stage 5: the draw. Inverse CDF over exp weights with the sequence's own xoshiro256** stream (a value
/// type: a fork copies the state, so parent and fork draw alike until one of them is reseeded).
/// </summary>
internal struct CategoricalDraw(ulong seed)
{
    private Xoshiro256StarStar _rng = new(seed);

    /// <summary>Draws from the whole vocabulary's exp weights.</summary>
    public int FromVocabulary(ReadOnlySpan<float> exp)
    {
        var target = _rng.NextDouble() * CandidateSet.SumAsDouble(exp);
        double cumulative = 0;
        var last = -1;
        for (var i = 0; i < exp.Length; i++)
        {
            var e = exp[i];
            if (e > 0f)
            {
                cumulative += e;
                last = i;
                if (cumulative > target) return i;
            }
        }
        // Only reachable through rounding between the two sums, or if every logit was -inf.
        return last >= 0 ? last : 0;
    }

    /// <summary>Draws one of the first <paramref name="n"/> candidates by their exp weights.</summary>
    public int FromCandidates(CandidateSet s, int n)
    {
        ReadOnlySpan<float> e = s.Values.AsSpan(0, n);
        var target = _rng.NextDouble() * CandidateSet.SumAsDouble(e);
        double cumulative = 0;
        var last = 0;
        for (var i = 0; i < e.Length; i++)
        {
            if (e[i] > 0f)
            {
                cumulative += e[i];
                last = i;
                if (cumulative > target) return s.Ids[i];
            }
        }
        return s.Ids[last];
    }
}
