namespace Serving.LoadGen.Workload;

/// <summary>
/// xoshiro256** seeded through SplitMix64: a generator whose sequence is fixed by this file, not by the
/// runtime (System.Random's algorithm may change between .NET versions), so a seed names one trace forever.
/// </summary>
public sealed class DeterministicRandom
{
    private ulong _s0, _s1, _s2, _s3;

    /// <summary>Creates a generator for <paramref name="seed"/> and an independent <paramref name="stream"/>.</summary>
    public DeterministicRandom(ulong seed, ulong stream = 0)
    {
        // Streams keep the adapter, length, arrival and prompt draws independent: changing one
        // parameter (say the rate) leaves every other column of the trace unchanged.
        ulong x = seed ^ (stream * 0xD1B54A32D192ED03UL);
        _s0 = SplitMix64(ref x);
        _s1 = SplitMix64(ref x);
        _s2 = SplitMix64(ref x);
        _s3 = SplitMix64(ref x);
    }

    private static ulong SplitMix64(ref ulong x)
    {
        ulong z = x += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Next raw 64-bit value.</summary>
    public ulong NextUInt64()
    {
        ulong result = ulong.RotateLeft(_s1 * 5, 7) * 9;
        ulong t = _s1 << 17;
        _s2 ^= _s0;
        _s3 ^= _s1;
        _s1 ^= _s2;
        _s0 ^= _s3;
        _s2 ^= t;
        _s3 = ulong.RotateLeft(_s3, 45);
        return result;
    }

    /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Uniform integer in [minInclusive, maxExclusive).</summary>
    public int NextInt(int minInclusive, int maxExclusive)
    {
        if (maxExclusive <= minInclusive)
        {
            throw new ArgumentOutOfRangeException(nameof(maxExclusive), $"Empty range [{minInclusive}, {maxExclusive}).");
        }

        ulong range = (ulong)((long)maxExclusive - minInclusive);
        // Multiply-high maps 64 random bits onto the range; the bias is below range / 2^64.
        ulong high = Math.BigMul(NextUInt64(), range, out _);
        return (int)((long)minInclusive + (long)high);
    }

    /// <summary>Standard normal by the Box–Muller transform.</summary>
    public double NextGaussian()
    {
        double u1 = 1.0 - NextDouble(); // (0, 1]: keeps Log finite
        double u2 = NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2);
    }

    /// <summary>Gamma(shape, scale) by Marsaglia–Tsang; shapes below 1 use the U^(1/shape) boost.</summary>
    public double NextGamma(double shape, double scale)
    {
        if (!(shape > 0) || !(scale > 0) || double.IsInfinity(shape) || double.IsInfinity(scale))
        {
            throw new ArgumentOutOfRangeException(nameof(shape), $"Gamma needs finite shape > 0 and scale > 0 (got {shape}, {scale}).");
        }

        if (shape < 1.0)
        {
            double u = 1.0 - NextDouble();
            return NextGamma(shape + 1.0, scale) * Math.Pow(u, 1.0 / shape);
        }

        double d = shape - 1.0 / 3.0;
        double c = 1.0 / Math.Sqrt(9.0 * d);
        while (true)
        {
            double x, v;
            do
            {
                x = NextGaussian();
                v = 1.0 + c * x;
            }
            while (v <= 0);

            v = v * v * v;
            double u = 1.0 - NextDouble();
            if (Math.Log(u) < 0.5 * x * x + d - d * v + d * Math.Log(v))
            {
                return d * v * scale;
            }
        }
    }
}
