namespace Serving.AdapterStore.Compression;

/// <summary>What <see cref="AutoCodec.Choose"/> picked.</summary>
/// <param name="Container">The encoded container.</param>
/// <param name="Chosen">The concrete setting.</param>
/// <param name="Proxy">The error split of the chosen setting.</param>
/// <param name="PredictedKept">Predicted fraction of the adapter's improvement kept.</param>
public sealed record AutoChoice(byte[] Container, CodecOptions Chosen, ProxyError Proxy, double PredictedKept);

/// <summary>
/// <see cref="AdapterCodec.Auto"/>: the smallest quant setting (SVD basis, per-module budget, target error from
/// <see cref="Ladder"/>) whose predicted quality is within the budget. The prediction uses only the adapter and its
/// reconstruction (<see cref="QualityProxy"/>): kept ≈ 1 − <see cref="SignalCost"/>·aligned − <see cref="NoiseCost"/>·noise.
/// The costs are the upper envelope of what the eight demo adapters measured (docs/benchmarks.md, "Adapter quality"):
/// the prediction is a lower bound on each of them, and over-protects the adapters that tolerate noise better.
/// </summary>
public static class AutoCodec
{
    /// <summary>Fraction of the improvement lost per unit of relative squared error along ΔW's own singular directions (envelope).</summary>
    public const double SignalCost = 1.7;

    /// <summary>Fraction of the improvement lost per unit of relative squared error in other directions (envelope; least squares per adapter: 0.1–1.1).</summary>
    public const double NoiseCost = 1.2;

    /// <summary>Below this predicted kept fraction an explicit setting is still stored, with a warning.</summary>
    public const double WarningKept = 0.5;

    /// <summary>Target errors tried (steps of about 10%), coarsest first.</summary>
    public static readonly IReadOnlyList<double> Ladder =
        [0.7, 0.6, 0.5, 0.45, 0.4, 0.36, 0.33, 0.3, 0.27, 0.25, 0.23, 0.21, 0.19, 0.17, 0.15, 0.13, 0.11, 0.1, 0.08, 0.06, 0.05];

    /// <summary>Predicted fraction of the adapter's loss improvement kept, in [0, 1].</summary>
    public static double PredictKept(ProxyError e) => Math.Clamp(1 - SignalCost * e.Aligned - NoiseCost * e.Noise, 0, 1);

    /// <summary>The setting of ladder step <paramref name="i"/>.</summary>
    public static CodecOptions Setting(int i) => new() { Codec = AdapterCodec.Quant, Quant = new QuantOptions { TargetError = Ladder[i] } };

    /// <summary>
    /// Picks the coarsest ladder step whose predicted kept fraction is at least <see cref="AutoOptions.MinKept"/>;
    /// lossless when even the finest step misses it. A per-module target ε gives noise ≈ ε², so the walk starts at
    /// the step nearest √((1 − min kept) / noise cost) and moves one step at a time (two or three encodes).
    /// </summary>
    public static AutoChoice Choose(AdapterPayload payload, AutoOptions options)
    {
        options.Validate();
        var plan = QuantPlan.Create(payload, FactorBasis.Svd, 1.0);
        var tried = new Dictionary<int, AutoChoice>();
        AutoChoice At(int i)
        {
            if (tried.TryGetValue(i, out var c)) return c;
            var setting = Setting(i);
            var body = new MemoryStream();
            var header = QuantCodec.Encode(plan, setting.Quant, body, out var reconstruction) with { Setting = setting.Describe() };
            var bytes = AdapterContainer.Assemble(header, body.GetBuffer().AsSpan(0, (int)body.Length));
            var proxy = plan.Proxy(reconstruction);
            return tried[i] = new AutoChoice(bytes, setting, proxy, PredictKept(proxy));
        }
        bool Passes(int i) => At(i).PredictedKept >= options.MinKept;

        double guess = Math.Sqrt((1 - options.MinKept) / NoiseCost);
        int start = Enumerable.Range(0, Ladder.Count).FirstOrDefault(i => Ladder[i] <= guess, Ladder.Count - 1);
        if (Passes(start))
        {
            while (start > 0 && Passes(start - 1)) start--;
            return At(start);
        }
        while (++start < Ladder.Count)
        {
            if (Passes(start)) return At(start);
        }
        var lossless = new CodecOptions { Codec = AdapterCodec.Lossless };
        return new AutoChoice(AdapterContainer.Encode(payload, lossless, out _), lossless, new ProxyError(0, 0), 1);
    }
}
