namespace Serving.AdapterStore.Compression;

/// <summary>
/// The singular value decomposition of one module's update <c>ΔW = s·B·A</c> (B [out, r], A [r, in]) without forming
/// ΔW: thin QR of B and of Aᵀ, then the SVD of the small r×r core <c>s·R_B·R_Aᵀ</c>. Components are sorted by
/// descending singular value; a component of a rank-deficient update has σ = 0 and zero vectors.
/// </summary>
/// <param name="Sigma">Singular values, descending.</param>
/// <param name="U">Left singular vectors, row-major [out, r] (column i belongs to σ_i).</param>
/// <param name="V">Right singular vectors, row-major [r, in] (row i belongs to σ_i).</param>
internal sealed record LowRankSvd(int Rank, int InFeatures, int OutFeatures, double[] Sigma, double[] U, double[] V)
{
    /// <summary>Decomposes <c>scale·B·A</c>.</summary>
    public static LowRankSvd Of(LoraWeights m) => Of(m.A, m.B, m.Rank, m.InFeatures, m.OutFeatures, m.Scale);

    /// <summary>Decomposes <c>scale·B·A</c> with A row-major [rank, inFeatures] and B row-major [outFeatures, rank].</summary>
    public static LowRankSvd Of(ReadOnlySpan<float> a, ReadOnlySpan<float> b, int rank, int inFeatures, int outFeatures, double scale)
    {
        int r = rank;
        // Column-major copies: column j of Bc is B[:, j]; column j of Ac is A[j, :] (that is, Aᵀ).
        var bc = new double[outFeatures * r];
        for (int o = 0; o < outFeatures; o++)
        {
            for (int j = 0; j < r; j++) bc[j * outFeatures + o] = b[o * r + j];
        }
        var ac = new double[inFeatures * r];
        for (int j = 0; j < r; j++)
        {
            for (int i = 0; i < inFeatures; i++) ac[j * inFeatures + i] = a[j * inFeatures + i];
        }
        var rb = ThinQr(bc, outFeatures, r);
        var ra = ThinQr(ac, inFeatures, r);
        // core = scale · R_B · R_Aᵀ, row-major r×r.
        var core = new double[r * r];
        for (int i = 0; i < r; i++)
        {
            for (int j = 0; j < r; j++)
            {
                double s = 0;
                for (int k = 0; k < r; k++) s += rb[i * r + k] * ra[j * r + k];
                core[i * r + j] = scale * s;
            }
        }
        var (cu, sigma, cv) = JacobiSvd(core, r);
        var order = Enumerable.Range(0, r).OrderByDescending(i => sigma[i]).ToArray();
        var u = new double[outFeatures * r];
        var v = new double[r * inFeatures];
        var sorted = new double[r];
        for (int c = 0; c < r; c++)
        {
            int src = order[c];
            sorted[c] = sigma[src];
            // U = Q_B · core_U, V = Q_A · core_V (column src of each).
            for (int k = 0; k < r; k++)
            {
                double wu = cu[k * r + src], wv = cv[k * r + src];
                if (wu != 0)
                {
                    for (int o = 0; o < outFeatures; o++) u[o * r + c] += wu * bc[k * outFeatures + o];
                }
                if (wv != 0)
                {
                    for (int i = 0; i < inFeatures; i++) v[c * inFeatures + i] += wv * ac[k * inFeatures + i];
                }
            }
        }
        return new LowRankSvd(r, inFeatures, outFeatures, sorted, u, v);
    }

    /// <summary>Index of the first component after which the kept energy Σσ² reaches <paramref name="fraction"/> of the total (1 keeps all non-zero ones).</summary>
    public int RankForEnergy(double fraction)
    {
        double total = 0;
        foreach (double s in Sigma) total += s * s;
        if (total == 0) return 0;
        double kept = 0;
        for (int i = 0; i < Rank; i++)
        {
            if (Sigma[i] == 0) return i;
            kept += Sigma[i] * Sigma[i];
            if (kept >= fraction * total * (1 - 1e-12)) return i + 1;
        }
        return Rank;
    }

    /// <summary>
    /// Balanced factors of the first <paramref name="rank"/> components: <c>B' = U·√Σ</c> [out, rank], <c>A' = √Σ·Vᵀ</c>
    /// [rank, in], so that <c>B'·A'</c> is the best rank-<paramref name="rank"/> approximation of ΔW (scale 1).
    /// </summary>
    public (float[] A, float[] B) Balanced(int rank)
    {
        var a = new float[rank * InFeatures];
        var b = new float[OutFeatures * rank];
        for (int c = 0; c < rank; c++)
        {
            double root = Math.Sqrt(Sigma[c]);
            for (int i = 0; i < InFeatures; i++) a[c * InFeatures + i] = (float)(root * V[c * InFeatures + i]);
            for (int o = 0; o < OutFeatures; o++) b[o * rank + c] = (float)(root * U[o * Rank + c]);
        }
        return (a, b);
    }

    /// <summary>
    /// Modified Gram–Schmidt with one re-orthogonalisation pass, in place: the columns of <paramref name="x"/>
    /// (column-major, <paramref name="rows"/> × <paramref name="cols"/>) become Q; returns R row-major [cols, cols].
    /// A column that is (numerically) in the span of the previous ones becomes zero with a zero diagonal in R.
    /// </summary>
    internal static double[] ThinQr(double[] x, int rows, int cols)
    {
        var r = new double[cols * cols];
        for (int j = 0; j < cols; j++)
        {
            var cj = x.AsSpan(j * rows, rows);
            double original = Norm(cj);
            for (int pass = 0; pass < 2; pass++)
            {
                for (int k = 0; k < j; k++)
                {
                    var ck = x.AsSpan(k * rows, rows);
                    double dot = 0;
                    for (int i = 0; i < rows; i++) dot += ck[i] * cj[i];
                    r[k * cols + j] += dot;
                    for (int i = 0; i < rows; i++) cj[i] -= dot * ck[i];
                }
            }
            double norm = Norm(cj);
            if (norm <= 1e-13 * original || norm == 0)
            {
                cj.Clear();
                continue;
            }
            r[j * cols + j] = norm;
            for (int i = 0; i < rows; i++) cj[i] /= norm;
        }
        return r;
    }

    /// <summary>One-sided (Hestenes) Jacobi SVD of a square row-major matrix: returns U, σ and V with M = U·diag(σ)·Vᵀ (unsorted).</summary>
    internal static (double[] U, double[] Sigma, double[] V) JacobiSvd(double[] m, int n)
    {
        var w = (double[])m.Clone(); // columns are rotated until orthogonal: W = M·V
        var v = new double[n * n];
        for (int i = 0; i < n; i++) v[i * n + i] = 1;
        for (int sweep = 0; sweep < 60; sweep++)
        {
            bool rotated = false;
            for (int p = 0; p < n - 1; p++)
            {
                for (int q = p + 1; q < n; q++)
                {
                    double alpha = 0, beta = 0, gamma = 0;
                    for (int i = 0; i < n; i++)
                    {
                        double wp = w[i * n + p], wq = w[i * n + q];
                        alpha += wp * wp;
                        beta += wq * wq;
                        gamma += wp * wq;
                    }
                    if (gamma == 0 || Math.Abs(gamma) <= 1e-15 * Math.Sqrt(alpha * beta)) continue;
                    rotated = true;
                    double zeta = (beta - alpha) / (2 * gamma);
                    double t = Math.Sign(zeta == 0 ? 1 : zeta) / (Math.Abs(zeta) + Math.Sqrt(1 + zeta * zeta));
                    double c = 1 / Math.Sqrt(1 + t * t), s = c * t;
                    Rotate(w, n, p, q, c, s);
                    Rotate(v, n, p, q, c, s);
                }
            }
            if (!rotated) break;
        }
        var sigma = new double[n];
        var u = new double[n * n];
        for (int j = 0; j < n; j++)
        {
            double norm = 0;
            for (int i = 0; i < n; i++) norm += w[i * n + j] * w[i * n + j];
            norm = Math.Sqrt(norm);
            sigma[j] = norm;
            if (norm == 0) continue;
            for (int i = 0; i < n; i++) u[i * n + j] = w[i * n + j] / norm;
        }
        return (u, sigma, v);
    }

    private static void Rotate(double[] x, int n, int p, int q, double c, double s)
    {
        for (int i = 0; i < n; i++)
        {
            double xp = x[i * n + p], xq = x[i * n + q];
            x[i * n + p] = c * xp - s * xq;
            x[i * n + q] = s * xp + c * xq;
        }
    }

    private static double Norm(ReadOnlySpan<double> x)
    {
        double s = 0;
        foreach (double v in x) s += v * v;
        return Math.Sqrt(s);
    }
}
