namespace Serving.AdapterStore.Compression;

/// <summary>Over what the top-k threshold, σ and α are computed.</summary>
[System.Text.Json.Serialization.JsonConverter(typeof(System.Text.Json.Serialization.JsonStringEnumConverter<ThresholdScope>))]
public enum ThresholdScope
{
    /// <summary>The reference: one group of all lora_A tensors and one of all lora_B tensors.</summary>
    Global,
    /// <summary>Each tensor on its own: every module keeps its share, with its own σ and α.</summary>
    PerTensor,
}

/// <summary>ComPEFT parameters (see docs/adapter-store.md for how the defaults were chosen).</summary>
public sealed record ComPeftOptions
{
    /// <summary>Threshold scope; <see cref="ThresholdScope.Global"/> reproduces the reference exactly.</summary>
    public ThresholdScope Scope { get; init; } = ThresholdScope.Global;

    /// <summary>Default kept fraction: 0.1 meets the ≥ 16× target against fp16 with margin.</summary>
    public const double DefaultDensity = 0.1;

    /// <summary>Default α multiplier (the reference code's default).</summary>
    public const double DefaultFactor = 1.0;

    /// <summary>Fraction of values kept per group, in (0, 1].</summary>
    public double Density { get; init; } = DefaultDensity;

    /// <summary>α = Factor · σ(group), &gt; 0.</summary>
    public double Factor { get; init; } = DefaultFactor;

    /// <summary>Throws when a parameter is out of range.</summary>
    public void Validate()
    {
        if (!(Density > 0 && Density <= 1)) throw new ArgumentOutOfRangeException(nameof(Density), Density, "density must be in (0, 1]");
        if (!(Factor > 0 && double.IsFinite(Factor))) throw new ArgumentOutOfRangeException(nameof(Factor), Factor, "factor must be a positive finite number");
    }
}

/// <summary>Result of sparsifying and ternarising one group (all A tensors, or all B tensors, flattened).</summary>
/// <param name="Count">Elements in the group.</param>
/// <param name="Positions">Ascending flat indices of non-zero outputs.</param>
/// <param name="Negative">Per kept position: true when the output is −α.</param>
/// <param name="Sigma">Unbiased standard deviation of the original group.</param>
/// <param name="Alpha">Magnitude of every kept value.</param>
/// <param name="Threshold">Magnitude at or above which values are kept.</param>
internal sealed record TernaryGroup(int Count, int[] Positions, bool[] Negative, double Sigma, float Alpha, float Threshold);

/// <summary>
/// ComPEFT as in the reference code: one global threshold per group at the k-th largest magnitude
/// (k = ⌊n·density⌋, ties at the threshold are all kept, as <c>|x| ≥ kthvalue</c> does), σ of the original
/// values, kept values replaced by <c>sign(x)·α</c>, α = factor·σ. A kept exact zero stays zero (torch.sign(0) = 0),
/// so it is not a position of the code.
/// </summary>
internal static class ComPeft
{
    public static TernaryGroup Ternarize(ReadOnlySpan<float> values, ComPeftOptions options)
    {
        options.Validate();
        int n = values.Length;
        double sigma = StdDev(values);
        float alpha = (float)(options.Factor * sigma);
        if (n == 0) return new TernaryGroup(0, [], [], sigma, alpha, 0f);

        float threshold = Threshold(values, options.Density);
        int kept = 0;
        for (int i = 0; i < n; i++)
        {
            float v = values[i];
            if (v != 0f && MathF.Abs(v) >= threshold) kept++;
        }
        var positions = new int[kept];
        var negative = new bool[kept];
        int j = 0;
        for (int i = 0; i < n; i++)
        {
            float v = values[i];
            if (v != 0f && MathF.Abs(v) >= threshold)
            {
                positions[j] = i;
                negative[j] = v < 0f;
                j++;
            }
        }
        return new TernaryGroup(n, positions, negative, sigma, alpha, threshold);
    }

    /// <summary>Number of values the reference keeps before ties: ⌊n·density⌋ (Python's <c>int(d*K)</c>).</summary>
    public static long KeepCount(long n, double density) => density >= 1.0 ? n : (long)Math.Floor(n * density);

    /// <summary>The (n−k)-th smallest magnitude (1-based), or −∞ (keep everything) when k = n.</summary>
    public static float Threshold(ReadOnlySpan<float> values, double density)
    {
        int n = values.Length;
        long k = KeepCount(n, density);
        if (k >= n) return float.NegativeInfinity;
        var abs = new float[n];
        for (int i = 0; i < n; i++) abs[i] = MathF.Abs(values[i]);
        return QuickSelect(abs, (int)(n - k - 1));
    }

    /// <summary>Unbiased (n−1) standard deviation, two-pass in double; 0 for fewer than two values.</summary>
    public static double StdDev(ReadOnlySpan<float> values)
    {
        int n = values.Length;
        if (n < 2) return 0.0;
        double sum = 0;
        for (int i = 0; i < n; i++) sum += values[i];
        double mean = sum / n;
        double ss = 0;
        for (int i = 0; i < n; i++)
        {
            double d = values[i] - mean;
            ss += d * d;
        }
        return Math.Sqrt(ss / (n - 1));
    }

    /// <summary>k-th smallest (0-based) by iterative Hoare partitioning with median-of-three pivots; reorders the array.</summary>
    private static float QuickSelect(float[] a, int k)
    {
        int lo = 0, hi = a.Length - 1;
        while (hi > lo)
        {
            int mid = lo + ((hi - lo) >> 1);
            if (a[mid] < a[lo]) (a[mid], a[lo]) = (a[lo], a[mid]);
            if (a[hi] < a[lo]) (a[hi], a[lo]) = (a[lo], a[hi]);
            if (a[hi] < a[mid]) (a[hi], a[mid]) = (a[mid], a[hi]);
            float pivot = a[mid];
            int i = lo, j = hi;
            while (i <= j)
            {
                while (a[i] < pivot) i++;
                while (a[j] > pivot) j--;
                if (i <= j)
                {
                    (a[i], a[j]) = (a[j], a[i]);
                    i++;
                    j--;
                }
            }
            if (k <= j) hi = j;
            else if (k >= i) lo = i;
            else return a[k];
        }
        return a[k];
    }
}
