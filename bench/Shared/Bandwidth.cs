using System.Diagnostics;
using System.Numerics.Tensors;

namespace Serving.Bench;

/// <summary>The machine's memory read bandwidth (for benches that reference System.Numerics.Tensors through the engine).</summary>
internal static class Bandwidth
{
    /// <summary>Read bandwidth: summing a 512 MB array split over the threads, best of 5 (the batch-1 roofline's and the
    /// adapter byte floor's denominator).</summary>
    public static double Read(int threads) => new Probe().Read(threads, tries: 5);

    /// <summary>
    /// The same measurement on one 512 MB array kept for repeated readings: this machine's bandwidth changes between
    /// minutes (neighbours on the host), so a ratio against it is only meaningful when read next to the thing measured.
    /// </summary>
    internal sealed class Probe
    {
        private readonly float[] _data = new float[128 * 1024 * 1024];

        public Probe() => new Random(1).NextBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(_data.AsSpan()));

        /// <summary>Bytes per second, best of <paramref name="tries"/> passes.</summary>
        public double Read(int threads, int tries)
        {
            var best = double.MaxValue;
            var chunk = _data.Length / threads;
            for (var rep = 0; rep < tries; rep++)
            {
                var sw = Stopwatch.StartNew();
                Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
                    TensorPrimitives.Sum(_data.AsSpan(t * chunk, chunk)));
                best = Math.Min(best, sw.Elapsed.TotalSeconds);
            }
            return _data.Length * 4.0 / best;
        }
    }
}
