using System.Numerics.Tensors;

namespace Serving.Inference.Sampling;

/// <summary>
/// Reported logprobs (vLLM's default): the log-softmax of the <b>raw</b> logits, before penalties and temperature, the
/// normaliser summed in double so logprobs hold to ~1e-7 over a 50k vocabulary; the top-N alternatives best first, ties
/// to the lowest id. State: the last step's top-N, copied on fork.
/// </summary>
internal sealed class LogprobStage
{
    private readonly int _topN;
    private readonly int[] _topIds;
    private readonly float[] _topValues;

    public LogprobStage(int topN)
    {
        _topN = topN;
        _topIds = new int[topN];
        _topValues = new float[topN];
    }

    private LogprobStage(LogprobStage parent)
    {
        _topN = parent._topN;
        _topIds = (int[])parent._topIds.Clone();
        _topValues = (float[])parent._topValues.Clone();
        Count = parent.Count;
    }

    /// <summary>Alternatives asked for per token.</summary>
    public int TopN => _topN;

    /// <summary>Alternatives captured at the last step.</summary>
    public int Count { get; private set; }

    public LogprobStage Clone() => new(this);

    /// <summary>
    /// log Z of the raw logits (<paramref name="rawMax"/> their maximum); leaves exp(raw − max) in <paramref name="exp"/>
    /// for a draw at temperature 1 to reuse.
    /// </summary>
    public static double LogNormaliser(ReadOnlySpan<float> logits, float rawMax, Span<float> exp)
    {
        ComputeExp(logits, rawMax, exp);
        return rawMax + Math.Log(CandidateSet.SumAsDouble(exp));
    }

    /// <summary>exp(raw − max) into <paramref name="exp"/>.</summary>
    public static void ComputeExp(ReadOnlySpan<float> logits, float rawMax, Span<float> exp)
    {
        TensorPrimitives.Subtract(logits, rawMax, exp);
        TensorPrimitives.Exp(exp, exp);
    }

    /// <summary>Captures the top-N alternatives of <paramref name="logits"/> (nothing when N = 0).</summary>
    public void Capture(ReadOnlySpan<float> logits, double logZ, Span<int> heapScratch)
    {
        var n = Math.Min(_topN, logits.Length);
        if (n == 0)
        {
            Count = 0;
            return;
        }
        var heap = heapScratch[..n];
        TopSelection.SelectTopK(logits, n, heap);
        TopSelection.SortBestFirst(logits, heap);
        for (var i = 0; i < n; i++)
        {
            _topIds[i] = heap[i];
            _topValues[i] = (float)(logits[heap[i]] - logZ);
        }
        Count = n;
    }

    /// <summary>Forgets the last capture (a step that took the greedy fast path).</summary>
    public void Clear() => Count = 0;

    /// <summary>Copies the last capture; returns how many entries were written.</summary>
    public int Fill(Span<int> ids, Span<float> logprobs)
    {
        var n = Math.Min(Count, Math.Min(ids.Length, logprobs.Length));
        _topIds.AsSpan(0, n).CopyTo(ids);
        _topValues.AsSpan(0, n).CopyTo(logprobs);
        return n;
    }
}
