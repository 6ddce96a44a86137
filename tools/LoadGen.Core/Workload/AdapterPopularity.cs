namespace Serving.LoadGen.Workload;

/// <summary>How requests pick an adapter.</summary>
public enum AdapterPopularityKind
{
    /// <summary>No adapter: every request names the base model (the "base only" baseline).</summary>
    None,
    /// <summary>Zipf-like power law over N adapters: P(rank k) ∝ (k + 1)^(−α), k = 0..N−1 (α = 0 uniform, α = 1 strongly skewed).</summary>
    PowerLaw,
    /// <summary>Uniform over N adapters.</summary>
    Uniform,
    /// <summary>Every request a different adapter (request i uses adapter i).</summary>
    Distinct,
    /// <summary>Every request the same adapter.</summary>
    Single,
    /// <summary>A user-given list of names with optional weights.</summary>
    List,
}

/// <summary>Adapter popularity parameters.</summary>
public sealed record AdapterPopularitySpec
{
    /// <summary>Distribution kind.</summary>
    public AdapterPopularityKind Kind { get; init; } = AdapterPopularityKind.PowerLaw;

    /// <summary>Number of adapters N (power law, uniform).</summary>
    public int Count { get; init; } = 8;

    /// <summary>Power-law exponent α.</summary>
    public double Alpha { get; init; } = 1.0;

    /// <summary>Generated names are Prefix + index (power law, uniform, distinct, single).</summary>
    public string Prefix { get; init; } = "adapter-";

    /// <summary>Names for <see cref="AdapterPopularityKind.List"/> (and the name for Single when given).</summary>
    public IReadOnlyList<string> Names { get; init; } = [];

    /// <summary>Relative weights matching <see cref="Names"/>; empty means equal weights.</summary>
    public IReadOnlyList<double> Weights { get; init; } = [];

    /// <summary>
    /// The power law of <see cref="AdapterPopularityKind.PowerLaw"/> over given names (real adapters) instead of generated
    /// ones: <paramref name="names"/>[k] has weight (k + 1)^(−α), so the first name is the most popular.
    /// </summary>
    public static AdapterPopularitySpec PowerLawOver(IReadOnlyList<string> names, double alpha)
    {
        ArgumentNullException.ThrowIfNull(names);
        if (!(alpha >= 0) || !double.IsFinite(alpha))
        {
            throw new ArgumentOutOfRangeException(nameof(alpha), alpha, "Power-law exponent must be finite and >= 0.");
        }

        return new AdapterPopularitySpec
        {
            Kind = AdapterPopularityKind.List,
            Names = names.ToArray(),
            Weights = Enumerable.Range(0, names.Count).Select(k => Math.Pow(k + 1, -alpha)).ToArray(),
            Alpha = alpha,
            Count = names.Count,
        };
    }
}

/// <summary>Samples adapter names for requests from an <see cref="AdapterPopularitySpec"/>.</summary>
public sealed class AdapterPopularity
{
    private readonly AdapterPopularitySpec _spec;
    private readonly string[] _names;
    private readonly double[] _cumulative;

    /// <summary>Validates the spec and precomputes the categorical distribution.</summary>
    public AdapterPopularity(AdapterPopularitySpec spec)
    {
        _spec = spec;
        (_names, Probabilities) = spec.Kind switch
        {
            AdapterPopularityKind.None or AdapterPopularityKind.Distinct => ([], []),
            AdapterPopularityKind.Single => ([spec.Names.Count > 0 ? spec.Names[0] : spec.Prefix + "0"], [1.0]),
            AdapterPopularityKind.PowerLaw => (Generated(spec), Normalise(Enumerable.Range(0, Positive(spec.Count)).Select(k => Math.Pow(k + 1, -CheckAlpha(spec.Alpha))))),
            AdapterPopularityKind.Uniform => (Generated(spec), Normalise(Enumerable.Repeat(1.0, Positive(spec.Count)))),
            AdapterPopularityKind.List => (ListNames(spec), Normalise(spec.Weights.Count == 0 ? Enumerable.Repeat(1.0, spec.Names.Count) : spec.Weights)),
            _ => throw new ArgumentOutOfRangeException(nameof(spec), spec.Kind, "Unknown adapter popularity kind."),
        };

        _cumulative = new double[Probabilities.Count];
        double sum = 0;
        for (int i = 0; i < _cumulative.Length; i++)
        {
            sum += Probabilities[i];
            _cumulative[i] = sum;
        }
    }

    /// <summary>The adapter names a categorical draw can return (empty for None and Distinct).</summary>
    public IReadOnlyList<string> Names => _names;

    /// <summary>Probability of each name in <see cref="Names"/>.</summary>
    public IReadOnlyList<double> Probabilities { get; }

    /// <summary>Adapter for request <paramref name="requestIndex"/>, or null for the base model.</summary>
    public string? Sample(DeterministicRandom rng, int requestIndex)
    {
        switch (_spec.Kind)
        {
            case AdapterPopularityKind.None:
                return null;
            case AdapterPopularityKind.Distinct:
                return _spec.Prefix + requestIndex.ToString(System.Globalization.CultureInfo.InvariantCulture);
            case AdapterPopularityKind.Single:
                return _names[0];
        }

        double u = rng.NextDouble();
        int index = Array.BinarySearch(_cumulative, u);
        index = index >= 0 ? index + 1 : ~index; // first cumulative strictly above u
        return _names[Math.Min(index, _names.Length - 1)];
    }

    private static string[] Generated(AdapterPopularitySpec spec) =>
        Enumerable.Range(0, Positive(spec.Count)).Select(i => spec.Prefix + i.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToArray();

    private static string[] ListNames(AdapterPopularitySpec spec)
    {
        if (spec.Names.Count == 0)
        {
            throw new ArgumentException("Adapter list is empty: give names with --adapter-list a,b,c.", nameof(spec));
        }

        if (spec.Weights.Count != 0 && spec.Weights.Count != spec.Names.Count)
        {
            throw new ArgumentException($"Adapter list has {spec.Names.Count} names but {spec.Weights.Count} weights.", nameof(spec));
        }

        return spec.Names.ToArray();
    }

    private static int Positive(int count) =>
        count > 0 ? count : throw new ArgumentOutOfRangeException(nameof(count), count, "Number of adapters must be positive.");

    private static double CheckAlpha(double alpha) =>
        alpha >= 0 && double.IsFinite(alpha) ? alpha : throw new ArgumentOutOfRangeException(nameof(alpha), alpha, "Power-law exponent must be finite and >= 0.");

    private static double[] Normalise(IEnumerable<double> weights)
    {
        double[] w = weights.ToArray();
        if (w.Any(x => !(x >= 0) || double.IsInfinity(x)) || w.Sum() <= 0)
        {
            throw new ArgumentException("Adapter weights must be finite, non-negative and not all zero.");
        }

        double sum = w.Sum();
        return w.Select(x => x / sum).ToArray();
    }
}
