namespace Serving.AdapterStore.Compression;

/// <summary>Relative error of one module's update after compression.</summary>
/// <param name="Layer">Layer.</param>
/// <param name="Module">Module name.</param>
/// <param name="Relative">‖ΔW − ΔŴ‖_F / ‖ΔW‖_F (0 when ΔW is 0 and so is the reconstruction).</param>
public sealed record ModuleError(int Layer, string Module, double Relative);

/// <summary>
/// Computes ‖B·A − B̂·Â‖_F / ‖B·A‖_F per module without forming ΔW: with Gram matrices of size r×r,
/// ‖BA‖² = tr((BᵀB)(AAᵀ)) and ⟨BA, B̂Â⟩ = tr((BᵀB̂)(ÂAᵀ)), so the cost is O((in + out)·r²) instead of O(in·out·r).
/// </summary>
public static class ReconstructionError
{
    /// <summary>Per-module relative errors, matched by (layer, module).</summary>
    public static IReadOnlyList<ModuleError> Compute(LoraAdapter original, LoraAdapter reconstructed)
    {
        var result = new List<ModuleError>(original.Modules.Count);
        foreach (var m in original.Modules)
        {
            // A lossy codec may drop a module whose whole update is not worth its bits: it reconstructs as zero.
            var r = reconstructed.Find(m.Layer, m.Module);
            double orig = Inner(m, m);
            if (r is null)
            {
                result.Add(new ModuleError(m.Layer, m.Module, orig > 0 ? 1 : 0));
                continue;
            }
            double rec = Inner(r, r);
            double cross = Inner(m, r);
            double diff = Math.Max(0, orig + rec - 2 * cross);
            double rel = orig > 0 ? Math.Sqrt(diff / orig) : (diff > 0 ? double.PositiveInfinity : 0);
            result.Add(new ModuleError(m.Layer, m.Module, rel));
        }
        return result;
    }

    /// <summary>‖s·B·A‖²_F of one module.</summary>
    public static double SquaredNorm(LoraWeights m) => Inner(m, m);

    /// <summary>⟨s₁B₁A₁, s₂B₂A₂⟩_F = s₁s₂·tr((B₁ᵀB₂)(A₂A₁ᵀ)).</summary>
    internal static double Inner(LoraWeights x, LoraWeights y)
    {
        int r1 = x.Rank, r2 = y.Rank, n = x.InFeatures, o = x.OutFeatures;
        var bb = new double[r1 * r2]; // B1ᵀ B2 [r1, r2]
        for (int row = 0; row < o; row++)
        {
            for (int i = 0; i < r1; i++)
            {
                double bi = x.B[row * r1 + i];
                if (bi == 0) continue;
                for (int j = 0; j < r2; j++) bb[i * r2 + j] += bi * y.B[row * r2 + j];
            }
        }
        var aa = new double[r2 * r1]; // A2 A1ᵀ [r2, r1]
        for (int j = 0; j < r2; j++)
        {
            for (int i = 0; i < r1; i++)
            {
                double s = 0;
                int ja = j * n, ia = i * n;
                for (int c = 0; c < n; c++) s += (double)y.A[ja + c] * x.A[ia + c];
                aa[j * r1 + i] = s;
            }
        }
        double trace = 0;
        for (int i = 0; i < r1; i++)
        {
            for (int j = 0; j < r2; j++) trace += bb[i * r2 + j] * aa[j * r1 + i];
        }
        return trace * x.Scale * y.Scale;
    }
}
