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

/// <summary>How the magnitude of kept values is chosen.</summary>
[System.Text.Json.Serialization.JsonConverter(typeof(System.Text.Json.Serialization.JsonStringEnumConverter<AlphaMode>))]
public enum AlphaMode
{
    /// <summary>The reference: α = factor · σ of the group.</summary>
    Sigma,
    /// <summary>Per group, the α that minimises the group's squared error (the mean kept magnitude).</summary>
    Tensor,
    /// <summary>Per rank component (a row of A, a column of B) the α that minimises its squared error; needs per-tensor scope.</summary>
    Component,
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

    /// <summary>How α is chosen (<see cref="AlphaMode.Sigma"/> is the reference).</summary>
    public AlphaMode Alpha { get; init; } = AlphaMode.Sigma;

    /// <summary>0: ternary (sign · α); 1–4: each kept value also gets this many bits indexing 2^k magnitudes fitted per group (Lloyd–Max).</summary>
    public int MagnitudeBits { get; init; }

    /// <summary>Basis the factors are sparsified in (<see cref="FactorBasis.Factors"/> is the reference).</summary>
    public FactorBasis Basis { get; init; } = FactorBasis.Factors;

    /// <summary>SVD basis only: keep the leading components holding this fraction of ‖ΔW‖².</summary>
    public double Energy { get; init; } = 1.0;

    /// <summary>Whether this is the reference algorithm (format-v1 layout, one α per group).</summary>
    internal bool IsReference => Alpha == AlphaMode.Sigma && MagnitudeBits == 0 && Basis == FactorBasis.Factors;

    /// <summary>Throws when a parameter is out of range.</summary>
    public void Validate()
    {
        if (!(Density > 0 && Density <= 1)) throw new ArgumentOutOfRangeException(nameof(Density), Density, "density must be in (0, 1]");
        if (!(Factor > 0 && double.IsFinite(Factor))) throw new ArgumentOutOfRangeException(nameof(Factor), Factor, "factor must be a positive finite number");
        if (MagnitudeBits < 0 || MagnitudeBits > 4) throw new ArgumentOutOfRangeException(nameof(MagnitudeBits), MagnitudeBits, "magnitude bits must be 0–4");
        if (Alpha == AlphaMode.Component && Scope != ThresholdScope.PerTensor)
            throw new ArgumentOutOfRangeException(nameof(Alpha), Alpha, "alpha=component (α per rank component) needs scope=per_tensor");
        if (!(Energy > 0 && Energy <= 1)) throw new ArgumentOutOfRangeException(nameof(Energy), Energy, "energy must be in (0, 1]");
        if (Energy < 1 && Basis != FactorBasis.Svd) throw new ArgumentOutOfRangeException(nameof(Energy), Energy, "energy truncation needs the SVD basis");
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
        return MagnitudeSelect.KthSmallestMagnitude(values, n - k - 1);
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
}
