using Serving.AdapterStore.Compression;

namespace Serving.AdapterStore.Tests.Compression;

/// <summary>The SVD re-factoring and magnitude selection against dense float64 re-statements.</summary>
public sealed class LowRankTests
{
    /// <summary>ΔW = s·B·A formed densely in float64, row-major [out, in].</summary>
    internal static double[] Dense(float[] a, float[] b, int rank, int inF, int outF, double scale)
    {
        var w = new double[outF * inF];
        for (int o = 0; o < outF; o++)
        {
            for (int i = 0; i < inF; i++)
            {
                double s = 0;
                for (int k = 0; k < rank; k++) s += (double)b[o * rank + k] * a[k * inF + i];
                w[o * inF + i] = scale * s;
            }
        }
        return w;
    }

    /// <summary>Eigenvalues of the symmetric matrix WᵀW by cyclic Jacobi rotations (descending): the squared singular values.</summary>
    internal static double[] SquaredSingularValues(double[] w, int rows, int cols)
    {
        var m = new double[cols, cols];
        for (int i = 0; i < cols; i++)
        {
            for (int j = 0; j < cols; j++)
            {
                double s = 0;
                for (int r = 0; r < rows; r++) s += w[r * cols + i] * w[r * cols + j];
                m[i, j] = s;
            }
        }
        for (int sweep = 0; sweep < 100; sweep++)
        {
            double off = 0;
            for (int p = 0; p < cols; p++)
            {
                for (int q = p + 1; q < cols; q++) off += m[p, q] * m[p, q];
            }
            if (off < 1e-30) break;
            for (int p = 0; p < cols; p++)
            {
                for (int q = p + 1; q < cols; q++)
                {
                    if (Math.Abs(m[p, q]) < 1e-300) continue;
                    double theta = (m[q, q] - m[p, p]) / (2 * m[p, q]);
                    double t = Math.Sign(theta == 0 ? 1 : theta) / (Math.Abs(theta) + Math.Sqrt(theta * theta + 1));
                    double c = 1 / Math.Sqrt(t * t + 1), s = t * c;
                    for (int k = 0; k < cols; k++)
                    {
                        double mkp = m[k, p], mkq = m[k, q];
                        m[k, p] = c * mkp - s * mkq;
                        m[k, q] = s * mkp + c * mkq;
                    }
                    for (int k = 0; k < cols; k++)
                    {
                        double mpk = m[p, k], mqk = m[q, k];
                        m[p, k] = c * mpk - s * mqk;
                        m[q, k] = s * mpk + c * mqk;
                    }
                }
            }
        }
        return Enumerable.Range(0, cols).Select(i => Math.Max(0, m[i, i])).OrderByDescending(x => x).ToArray();
    }

    [Theory]
    [InlineData(1, 4, 12, 20)]
    [InlineData(2, 6, 30, 8)]
    [InlineData(3, 1, 5, 7)]
    public void Svd_OfRandomFactors_ReproducesDenseDeltaAndItsSpectrum(int seed, int rank, int inF, int outF)
    {
        var rng = new Random(seed);
        var a = TestAdapters.Gaussian(rng, rank * inF, 0.3);
        var b = TestAdapters.Gaussian(rng, outF * rank, 0.2);
        var dense = Dense(a, b, rank, inF, outF, 1.7);
        var svd = LowRankSvd.Of(a, b, rank, inF, outF, 1.7);
        var expected = SquaredSingularValues(dense, outF, inF);
        for (int i = 0; i < rank; i++) Assert.Equal(Math.Sqrt(expected[i]), svd.Sigma[i], 1e-9 * (1 + Math.Sqrt(expected[0])));
        for (int i = 1; i < rank; i++) Assert.True(svd.Sigma[i - 1] >= svd.Sigma[i]);
        var (ba, bb) = svd.Balanced(rank);
        var product = Dense(ba, bb, rank, inF, outF, 1.0);
        double norm = Math.Sqrt(dense.Sum(x => x * x));
        for (int i = 0; i < dense.Length; i++) Assert.Equal(dense[i], product[i], 1e-6 * norm);
        // Balanced: row c of A' and column c of B' both have norm √σ_c.
        for (int c = 0; c < rank; c++)
        {
            double na = Math.Sqrt(Enumerable.Range(0, inF).Sum(i => (double)ba[c * inF + i] * ba[c * inF + i]));
            double nb = Math.Sqrt(Enumerable.Range(0, outF).Sum(o => (double)bb[o * rank + c] * bb[o * rank + c]));
            Assert.Equal(Math.Sqrt(svd.Sigma[c]), na, 1e-5);
            Assert.Equal(Math.Sqrt(svd.Sigma[c]), nb, 1e-5);
        }
    }

    [Fact]
    public void Svd_RankDeficientFactors_GivesZeroTrailingComponents()
    {
        var rng = new Random(4);
        var a = TestAdapters.Gaussian(rng, 3 * 10, 1);
        var b = TestAdapters.Gaussian(rng, 9 * 3, 1);
        for (int i = 0; i < 10; i++) a[2 * 10 + i] = a[i] * 2; // row 2 = 2 · row 0: rank 2
        var svd = LowRankSvd.Of(a, b, 3, 10, 9, 1);
        Assert.True(svd.Sigma[1] > 1e-3);
        Assert.True(svd.Sigma[2] < 1e-9 * svd.Sigma[0], $"σ₃ = {svd.Sigma[2]}");
        Assert.Equal(2, svd.RankForEnergy(1.0));
    }

    [Fact]
    public void RankForEnergy_KeepsTheShortestPrefixReachingTheFraction()
    {
        var svd = new LowRankSvd(4, 1, 1, [4, 2, 1, 1], new double[4], new double[4]); // energies 16, 4, 1, 1 of 22
        Assert.Equal(1, svd.RankForEnergy(16 / 22.0));
        Assert.Equal(2, svd.RankForEnergy(0.8));
        Assert.Equal(3, svd.RankForEnergy(21 / 22.0));
        Assert.Equal(4, svd.RankForEnergy(1.0));
    }

    [Theory]
    [InlineData(1, 1000)]
    [InlineData(2, 37)]
    [InlineData(3, 1)]
    public void KthSmallestMagnitude_EqualsSortedMagnitudes(int seed, int n)
    {
        var rng = new Random(seed);
        var values = TestAdapters.Gaussian(rng, n, 1);
        for (int i = 0; i < n; i += 7) values[i] = values[(i * 3) % n]; // ties
        if (n > 10)
        {
            values[3] = 0f;
            values[4] = -0f;
            values[5] = 1e-42f; // subnormal
            values[6] = -values[7];
        }
        var sorted = values.Select(MathF.Abs).OrderBy(x => x).ToArray();
        for (int k = 0; k < n; k++) Assert.Equal(sorted[k], MagnitudeSelect.KthSmallestMagnitude(values, k));
    }
}
