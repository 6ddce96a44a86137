namespace Serving.AdapterStore.Compression;

/// <summary>The data-free proxy of one reconstruction: squared errors relative to each module's ‖ΔW‖², averaged over modules.</summary>
/// <param name="Aligned">Lost signal: Σ σᵢ²(1 − cᵢ)² / ‖ΔW‖², where cᵢ = uᵢᵀΔŴvᵢ / σᵢ is how much of ΔW's i-th singular component the reconstruction keeps.</param>
/// <param name="Noise">The rest of ‖ΔW − ΔŴ‖² / ‖ΔW‖²: error outside ΔW's own singular directions.</param>
public sealed record ProxyError(double Aligned, double Noise)
{
    /// <summary>Total relative error √(aligned + noise).</summary>
    public double Total => Math.Sqrt(Aligned + Noise);
}

/// <summary>
/// Splits the reconstruction error of every module into the part along ΔW's own singular directions (signal lost:
/// truncated components, shrunken magnitudes) and the rest (quantisation noise in other directions). Measured on the
/// demo adapters (docs/benchmarks.md), noise costs an adapter far less of its improvement than the same norm of lost
/// signal, so the two get separate weights in <see cref="AutoCodec"/>'s prediction. Every module counts the same,
/// whatever its norm: a budget that left the small modules with large relative errors lost far more than the
/// norm-weighted error said.
/// </summary>
public static class QualityProxy
{
    /// <summary>
    /// How many times a unit of lost signal costs more than a unit of noise (the ratio of the two fitted costs in
    /// <see cref="AutoCodec.PredictKept"/>, rounded); the quantiser weighs its drop and rescaling decisions with it.
    /// </summary>
    public const double SignalWeight = 8;

    /// <summary>√((W·aligned + noise)), the error the quantiser's target refers to.</summary>
    public static double Weighted(ProxyError e) => Math.Sqrt(SignalWeight * e.Aligned + e.Noise);

    /// <summary>Proxy of <paramref name="reconstructed"/> against <paramref name="original"/> (modules matched by layer and name; a missing one is zero).</summary>
    public static ProxyError Compute(LoraAdapter original, LoraAdapter reconstructed)
    {
        var mean = new Mean();
        foreach (var m in original.Modules) mean.Add(Module(m, reconstructed.Find(m.Layer, m.Module)));
        return mean.Result;
    }

    /// <summary>Averages per-module splits relative to each module's norm (modules with ΔW = 0 carry no weight).</summary>
    internal sealed class Mean
    {
        private double _aligned, _noise;
        private int _count;

        public void Add((double Aligned, double Noise, double Norm) module)
        {
            if (module.Norm <= 0) return;
            _aligned += module.Aligned / module.Norm;
            _noise += module.Noise / module.Norm;
            _count++;
        }

        public ProxyError Result => _count == 0 ? new ProxyError(0, 0) : new ProxyError(_aligned / _count, _noise / _count);
    }

    /// <summary>(aligned², noise², ‖ΔW‖²) of one module.</summary>
    internal static (double Aligned, double Noise, double Norm) Module(LoraWeights m, LoraWeights? r) => Module(m, LowRankSvd.Of(m), r);

    /// <summary>(aligned², noise², ‖ΔW‖²) of one module whose SVD (and optionally ‖ΔW‖²) is known.</summary>
    internal static (double Aligned, double Noise, double Norm) Module(LoraWeights m, LowRankSvd svd, LoraWeights? r, double norm = -1)
    {
        if (norm < 0) norm = ReconstructionError.Inner(m, m);
        if (r is null) return (norm, 0, norm);
        double diff = Math.Max(0, norm + ReconstructionError.Inner(r, r) - 2 * ReconstructionError.Inner(m, r));
        double aligned = 0;
        var ub = new double[r.Rank];
        var av = new double[r.Rank];
        for (int i = 0; i < svd.Rank; i++)
        {
            double sigma = svd.Sigma[i];
            if (sigma == 0) continue;
            // uᵢᵀ·B̂ [1, r̂] and Â·vᵢ [r̂]: the kept coefficient is ŝ·(uᵢᵀB̂)·(Âvᵢ).
            Array.Clear(ub);
            Array.Clear(av);
            for (int o = 0; o < m.OutFeatures; o++)
            {
                double u = svd.U[o * svd.Rank + i];
                if (u == 0) continue;
                for (int k = 0; k < r.Rank; k++) ub[k] += u * r.B[o * r.Rank + k];
            }
            for (int k = 0; k < r.Rank; k++)
            {
                double s = 0;
                for (int c = 0; c < m.InFeatures; c++) s += r.A[k * m.InFeatures + c] * svd.V[i * m.InFeatures + c];
                av[k] = s;
            }
            double kept = 0;
            for (int k = 0; k < r.Rank; k++) kept += ub[k] * av[k];
            kept *= r.Scale;
            aligned += (sigma - kept) * (sigma - kept);
        }
        aligned = Math.Min(aligned, diff);
        return (aligned, diff - aligned, norm);
    }
}
