using System.Diagnostics;
using System.Numerics.Tensors;

namespace Serving.Bench;

/// <summary>The machine's memory read bandwidth (for benches that reference System.Numerics.Tensors through the engine).</summary>
internal static class Bandwidth
{
    /// <summary>Read bandwidth: summing a 512 MB array split over the threads, best of 5 (the batch-1 roofline's and the
    /// adapter byte floor's denominator).</summary>
    public static double Read(int threads)
    {
        var data = new float[128 * 1024 * 1024];
        new Random(1).NextBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan()));
        var best = double.MaxValue;
        for (var rep = 0; rep < 5; rep++)
        {
            var sw = Stopwatch.StartNew();
            var chunk = data.Length / threads;
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
                TensorPrimitives.Sum(data.AsSpan(t * chunk, chunk)));
            best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        return data.Length * 4.0 / best;
    }
}
