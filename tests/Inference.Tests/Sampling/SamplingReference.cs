using Xunit;
using Serving.Inference.Sampling;

namespace Serving.Inference.Tests.Sampling;

/// <summary>
/// Naive, independent implementations (double precision, full sorts, no shared code with the sampler) that the
/// tests compare the sampler against.
/// </summary>
internal static class SamplingReference
{
    /// <summary>Deterministic logits from a test seed: normal-ish values times <paramref name="scale"/>.</summary>
    public static float[] RandomLogits(int vocab, int seed, float scale = 3f)
    {
        var random = new Random(seed);
        var logits = new float[vocab];
        for (int i = 0; i < vocab; i++)
        {
            // Sum of uniforms: roughly normal, enough spread to have a clear head and a long tail.
            double x = random.NextDouble() + random.NextDouble() + random.NextDouble() - 1.5;
            logits[i] = (float)(x * 2 * scale);
        }
        return logits;
    }

    /// <summary>LLM-shaped logits: a random body plus <paramref name="heads"/> clearly preferred tokens.</summary>
    public static float[] PeakedLogits(int vocab, int seed, int heads = 30)
    {
        float[] logits = RandomLogits(vocab, seed, scale: 1.5f);
        var random = new Random(seed + 1);
        for (int i = 0; i < heads; i++)
        {
            logits[random.Next(vocab)] += 8f + (float)random.NextDouble() * 4f;
        }
        return logits;
    }

    /// <summary>Logits whose softmax is exactly proportional to <paramref name="probs"/> (log of each).</summary>
    public static float[] LogitsFor(params double[] probs) => probs.Select(p => (float)Math.Log(p)).ToArray();

    public static double[] LogSoftmax(ReadOnlySpan<float> logits)
    {
        double max = double.NegativeInfinity;
        foreach (float x in logits)
        {
            max = Math.Max(max, x);
        }
        double sum = 0;
        foreach (float x in logits)
        {
            sum += Math.Exp(x - max);
        }
        double logZ = max + Math.Log(sum);
        var result = new double[logits.Length];
        for (int i = 0; i < logits.Length; i++)
        {
            result[i] = logits[i] - logZ;
        }
        return result;
    }

    /// <summary>Penalties written straight from the formulas (HF/vLLM repetition, OpenAI presence/frequency).</summary>
    public static float[] Penalize(float[] logits, IEnumerable<int> prompt, IReadOnlyList<int> output, SamplingParameters p)
    {
        var result = (float[])logits.Clone();
        var seen = new HashSet<int>(prompt.Concat(output));
        var counts = output.GroupBy(t => t).ToDictionary(g => g.Key, g => g.Count());
        for (int i = 0; i < result.Length; i++)
        {
            if (seen.Contains(i))
            {
                result[i] = result[i] > 0 ? result[i] / p.RepetitionPenalty : result[i] * p.RepetitionPenalty;
            }
            if (counts.TryGetValue(i, out int c))
            {
                result[i] = result[i] - p.FrequencyPenalty * c - p.PresencePenalty;
            }
        }
        return result;
    }

    /// <summary>Expected sampling distribution after temperature, top-k, top-p and min-p (penalties already applied).</summary>
    public static double[] Distribution(float[] logits, SamplingParameters p)
    {
        int v = logits.Length;
        double[] w = logits.Select(x => (double)x / p.Temperature).ToArray();
        var order = Enumerable.Range(0, v).OrderByDescending(i => w[i]).ThenBy(i => i).ToArray();
        var keep = new bool[v];
        Array.Fill(keep, true);

        if (p.TopK > 0 && p.TopK < v)
        {
            double kth = w[order[p.TopK - 1]];
            for (int i = 0; i < v; i++)
            {
                keep[i] = w[i] >= kth;
            }
        }

        double[] prob = Normalize(w, keep);
        if (p.TopP < 1)
        {
            double cumulative = 0;
            bool done = false;
            foreach (int i in order)
            {
                if (!keep[i])
                {
                    continue;
                }
                if (done)
                {
                    keep[i] = false;
                    continue;
                }
                cumulative += prob[i];
                done = cumulative >= p.TopP;
            }
            prob = Normalize(w, keep);
        }
        if (p.MinP > 0)
        {
            double pmax = prob.Max();
            for (int i = 0; i < v; i++)
            {
                keep[i] &= prob[i] >= p.MinP * pmax;
            }
            prob = Normalize(w, keep);
        }
        return prob;
    }

    private static double[] Normalize(double[] w, bool[] keep)
    {
        double max = double.NegativeInfinity;
        for (int i = 0; i < w.Length; i++)
        {
            if (keep[i])
            {
                max = Math.Max(max, w[i]);
            }
        }
        var prob = new double[w.Length];
        double sum = 0;
        for (int i = 0; i < w.Length; i++)
        {
            prob[i] = keep[i] ? Math.Exp(w[i] - max) : 0;
            sum += prob[i];
        }
        for (int i = 0; i < w.Length; i++)
        {
            prob[i] /= sum;
        }
        return prob;
    }

    /// <summary>
    /// Pearson chi-square of observed counts against expected probabilities, pooling cells expected below 5 draws.
    /// Fails at once if a token with probability 0 was drawn. Returns (statistic, critical value at α = 0.001).
    /// </summary>
    public static (double Statistic, double Critical) ChiSquare(int[] counts, double[] expected)
    {
        int draws = counts.Sum();
        double stat = 0;
        int cells = 0;
        double pooledExpected = 0;
        int pooledObserved = 0;
        for (int i = 0; i < counts.Length; i++)
        {
            if (expected[i] == 0)
            {
                Assert.True(counts[i] == 0, $"token {i} has probability 0 but was drawn {counts[i]} times");
                continue;
            }
            double e = expected[i] * draws;
            if (e < 5)
            {
                pooledExpected += e;
                pooledObserved += counts[i];
                continue;
            }
            stat += (counts[i] - e) * (counts[i] - e) / e;
            cells++;
        }
        if (pooledExpected >= 5)
        {
            stat += (pooledObserved - pooledExpected) * (pooledObserved - pooledExpected) / pooledExpected;
            cells++;
        }
        int dof = Math.Max(1, cells - 1);
        // Wilson–Hilferty approximation of the chi-square quantile; z = 3.09 is the one-sided 0.999 normal quantile.
        double a = 2.0 / (9 * dof);
        double critical = dof * Math.Pow(1 - a + 3.09 * Math.Sqrt(a), 3);
        return (stat, critical);
    }

    /// <summary>Draws <paramref name="draws"/> tokens from the same logits (no Accept, so no penalty drift).</summary>
    public static int[] Histogram(TokenSampler sampler, float[] logits, int draws)
    {
        var counts = new int[logits.Length];
        for (int i = 0; i < draws; i++)
        {
            counts[sampler.Sample(logits, out _)]++;
        }
        return counts;
    }
}
