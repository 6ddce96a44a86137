using System.Numerics;

namespace Serving.Inference.Sampling;

/// <summary>
/// The vocabulary-sized scratch one sampler's stages share, allocated once: a working copy of the logits, their
/// exponentials, and the candidate list (ids and values) the truncation stages narrow down. Not thread-safe.
/// </summary>
internal sealed class CandidateSet
{
    public CandidateSet(int vocabSize, int heapSize)
    {
        Work = new float[vocabSize];
        Exp = new float[vocabSize];
        Values = new float[vocabSize];
        Ids = new int[vocabSize];
        Heap = new int[heapSize];
    }

    /// <summary>Logits after the transforming stages (penalties, bias, temperature).</summary>
    public float[] Work { get; }

    /// <summary>exp(w − max) of the logits being sampled (or of the raw logits for the normaliser).</summary>
    public float[] Exp { get; }

    /// <summary>Candidate values, parallel to <see cref="Ids"/>.</summary>
    public float[] Values { get; }

    /// <summary>Candidate token ids.</summary>
    public int[] Ids { get; }

    /// <summary>Heap scratch of <see cref="TopSelection"/> (top-k and top logprobs).</summary>
    public int[] Heap { get; }

    /// <summary>
    /// Candidates = ids whose <paramref name="source"/> value is ≥ <paramref name="threshold"/>, in id order, values
    /// copied to <see cref="Values"/>; returns their count. A vector compare skips the long tail.
    /// </summary>
    public int Gather(ReadOnlySpan<float> source, float threshold)
    {
        var n = 0;
        var i = 0;
        var width = Vector<float>.Count;
        var t = new Vector<float>(threshold);
        for (; i <= source.Length - width; i += width)
        {
            if (!Vector.GreaterThanOrEqualAny(new Vector<float>(source.Slice(i, width)), t)) continue;
            for (var j = i; j < i + width; j++)
            {
                if (source[j] >= threshold)
                {
                    Ids[n] = j;
                    Values[n++] = source[j];
                }
            }
        }
        for (; i < source.Length; i++)
        {
            if (source[i] >= threshold)
            {
                Ids[n] = i;
                Values[n++] = source[i];
            }
        }
        return n;
    }

    /// <summary>Sum of floats accumulated in double (vectorised by widening).</summary>
    public static double SumAsDouble(ReadOnlySpan<float> values)
    {
        var acc0 = Vector<double>.Zero;
        var acc1 = Vector<double>.Zero;
        var width = Vector<float>.Count;
        var i = 0;
        for (; i <= values.Length - width; i += width)
        {
            Vector.Widen(new Vector<float>(values.Slice(i, width)), out Vector<double> low, out Vector<double> high);
            acc0 += low;
            acc1 += high;
        }
        var sum = Vector.Sum(acc0 + acc1);
        for (; i < values.Length; i++) sum += values[i];
        return sum;
    }
}
