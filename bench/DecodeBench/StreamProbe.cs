using System.Diagnostics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Microsoft.ML.OnnxRuntime;
using Serving.Inference.Runtime;

/// <summary>
/// How fast a batch-1 decode step's weights can be streamed on this machine, three ways, alternating in one process
/// (the machine's bandwidth moves between minutes, so only readings taken side by side compare): (1) the read-bandwidth
/// probe the roofline divides by (a sum over 512 MB, two threads, best of 3); (2) ONNX Runtime's MatMul alone at M = 1
/// over the checkpoint's projection shapes and LM head, one session per layer as the engine runs them (best of 10 steps);
/// (3) a hand-written AVX-512 GEMV over the same weights, each thread streaming a contiguous half of each matrix's rows
/// into its own partial result (one read stream per thread, the result in L1), the halves summed after (best of 10).
/// The engine's batch-1 step cannot read its weights faster than (2); (3) says whether a kernel of our own would.
/// </summary>
internal static unsafe class StreamProbe
{
    public static void Run(Serving.Checkpoints.ModelConfig c, int reps)
    {
        int d = c.HiddenSize, f = c.IntermediateSize, q = c.NumHeads * c.HeadDim, kv = c.NumKvHeads * c.HeadDim;
        var llama = c.Architecture == Serving.Checkpoints.ModelArchitecture.Llama;
        var shapes = new List<(int K, int N)>();
        for (var l = 0; l < c.NumLayers; l++) shapes.AddRange([(d, q + 2 * kv), (q, d), (d, llama ? 2 * f : f), (f, d)]);
        shapes.Add((d, c.VocabSize));
        var bytes = shapes.Sum(s => 4L * s.K * s.N);
        var rng = new Random(1);
        var weights = shapes.Select(s =>
        {
            var w = new float[s.K * s.N];
            for (var i = 0; i < w.Length; i++) w[i] = (float)(rng.NextDouble() - 0.5) * 0.02f;
            return w;
        }).ToList();
        var x = new float[shapes.Max(s => s.K)];
        for (var i = 0; i < x.Length; i++) x[i] = (float)rng.NextDouble();

        using var so = OrtRuntime.CreateSessionOptions(new RuntimeOptions { Threads = 2 });
        var units = new List<(InferenceSession Session, OrtIoBinding Io)>();
        var owned = new List<OrtValue>();
        for (var l = 0; l <= c.NumLayers; l++)
        {
            var idx = l < c.NumLayers ? Enumerable.Range(4 * l, 4).ToList() : [4 * c.NumLayers];
            var session = new InferenceSession(Serving.Inference.Graphs.GemmProbe.BuildLayer(idx.Select(i => (weights[i], shapes[i].K, shapes[i].N)).ToList()), so);
            var io = session.CreateIoBinding();
            for (var j = 0; j < idx.Count; j++)
            {
                var (k, n) = shapes[idx[j]];
                var xv = OrtValue.CreateTensorValueFromMemory(x[..k], [1, k]);
                var yv = OrtValue.CreateTensorValueFromMemory(new float[n], [1, n]);
                owned.Add(xv);
                owned.Add(yv);
                io.BindInput($"x{j}", xv);
                io.BindOutput($"y{j}", yv);
            }
            units.Add((session, io));
        }
        using var gemv = new TwoThreadGemv(weights, shapes, x);
        weights.Clear();
        var probe = new float[128 * 1024 * 1024];
        new Random(1).NextBytes(MemoryMarshal.AsBytes(probe.AsSpan()));
        using var run = new RunOptions();

        Console.WriteLine($"{bytes / 1e6:F0} MB of weights per step (projections + LM head), M = 1, 2 threads");
        Console.WriteLine("| rep | sum probe GB/s | ORT MatMul ms | GB/s | of probe | own GEMV ms | GB/s | of probe |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|");
        var ortShare = new List<double>();
        var ownShare = new List<double>();
        for (var rep = 0; rep < reps; rep++)
        {
            var bandwidth = SumProbe(probe);
            var ort = Best(10, () =>
            {
                foreach (var (s, io) in units) s.RunWithBinding(run, io);
            });
            gemv.Active = true;
            var own = Best(10, gemv.Step);
            gemv.Active = false;
            ortShare.Add(bytes / ort / bandwidth);
            ownShare.Add(bytes / own / bandwidth);
            Console.WriteLine($"| {rep + 1} | {bandwidth / 1e9:F1} | {ort * 1e3:F2} | {bytes / ort / 1e9:F1} | {ortShare[^1]:P0} | {own * 1e3:F2} | {bytes / own / 1e9:F1} | {ownShare[^1]:P0} |");
        }
        Console.WriteLine($"median share of the probe: ORT MatMul {Stats.Median(ortShare):P0} ({ortShare.Min():P0}–{ortShare.Max():P0}), own GEMV {Stats.Median(ownShare):P0} ({ownShare.Min():P0}–{ownShare.Max():P0})");
        gemv.Check();
        foreach (var (s, io) in units)
        {
            io.Dispose();
            s.Dispose();
        }
        foreach (var o in owned) o.Dispose();
    }

    private static double Best(int times, Action action)
    {
        var best = double.MaxValue;
        for (var i = 0; i < times; i++)
        {
            var sw = Stopwatch.StartNew();
            action();
            best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        return best;
    }

    private static double SumProbe(float[] data)
    {
        var best = double.MaxValue;
        var chunk = data.Length / 2;
        for (var rep = 0; rep < 3; rep++)
        {
            var sw = Stopwatch.StartNew();
            Parallel.For(0, 2, new ParallelOptions { MaxDegreeOfParallelism = 2 }, t => TensorPrimitives.Sum(data.AsSpan(t * chunk, chunk)));
            best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        return data.Length * 4.0 / best;
    }

    /// <summary>
    /// y = x·W for every matrix in turn on the calling thread and one helper thread (spinning only while <see cref="Active"/>,
    /// so it takes no core from ONNX Runtime's pool in the other phases).
    /// </summary>
    private sealed class TwoThreadGemv : IDisposable
    {
        private readonly List<(int K, int N)> _shapes;
        private readonly float*[] _w;
        private readonly float* _x, _y, _partial;
        private readonly float[] _check;
        private readonly Thread _helper;
        private volatile int _generation, _done, _matrix;
        private volatile bool _stop;

        public volatile bool Active;

        public TwoThreadGemv(List<float[]> weights, List<(int K, int N)> shapes, float[] x)
        {
            _shapes = shapes;
            _w = new float*[weights.Count];
            for (var i = 0; i < weights.Count; i++)
            {
                _w[i] = (float*)NativeMemory.AlignedAlloc((nuint)(weights[i].Length * 4), 64);
                weights[i].AsSpan().CopyTo(new Span<float>(_w[i], weights[i].Length));
            }
            var widest = shapes.Max(s => s.N);
            _x = (float*)NativeMemory.AlignedAlloc((nuint)(x.Length * 4), 64);
            x.AsSpan().CopyTo(new Span<float>(_x, x.Length));
            _y = (float*)NativeMemory.AlignedAlloc((nuint)(widest * 4), 64);
            _partial = (float*)NativeMemory.AlignedAlloc((nuint)(widest * 4), 64);
            // float64 reference of the first matrix's product, for Check()
            var (k0, n0) = shapes[0];
            _check = new float[n0];
            for (var col = 0; col < n0; col++)
            {
                double s = 0;
                for (var r = 0; r < k0; r++) s += (double)x[r] * weights[0][r * n0 + col];
                _check[col] = (float)s;
            }
            _helper = new Thread(Helper) { IsBackground = true, Name = "gemv-probe" };
            _helper.Start();
        }

        public void Step() => Matrices(_shapes.Count);

        private void Matrices(int count)
        {
            for (var m = 0; m < count; m++)
            {
                _matrix = m;
                _done = 0;
                Interlocked.Increment(ref _generation);
                Half(m, 0, _y);
                while (_done == 0) Thread.SpinWait(1);
                var n = _shapes[m].N;
                var c = 0;
                for (; c + 16 <= n; c += 16) (Vector512.Load(_y + c) + Vector512.Load(_partial + c)).Store(_y + c);
                for (; c < n; c++) _y[c] += _partial[c];
            }
        }

        /// <summary>Recomputes the first matrix alone and compares with the float64 reference (the probe's kernel is checked, not trusted).</summary>
        public void Check()
        {
            Active = true;
            Matrices(1);
            Active = false;
            var worst = 0.0;
            for (var i = 0; i < _check.Length; i++) worst = Math.Max(worst, Math.Abs(_y[i] - _check[i]) / (Math.Abs(_check[i]) + 1e-3));
            Console.WriteLine($"own GEMV vs float64 (first matrix): max relative error {worst:E1}");
            if (worst > 1e-3) throw new InvalidOperationException("the probe's GEMV is wrong");
        }

        private void Helper()
        {
            var seen = 0;
            while (!_stop)
            {
                if (_generation == seen)
                {
                    if (Active) Thread.SpinWait(20);
                    else Thread.Sleep(1);
                    continue;
                }
                seen = _generation;
                Half(_matrix, 1, _partial);
                _done = 1;
            }
        }

        private void Half(int m, int half, float* y)
        {
            var (k, n) = _shapes[m];
            int r0 = half == 0 ? 0 : k / 2, r1 = half == 0 ? k / 2 : k;
            Rows(_w[m], _x, y, r0, r1, n);
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private static void Rows(float* w, float* x, float* y, int r0, int r1, int n)
        {
            new Span<float>(y, n).Clear();
            for (var r = r0; r < r1; r++)
            {
                var xr = Vector512.Create(x[r]);
                var p = w + (long)r * n;
                var c = 0;
                for (; c + 16 <= n; c += 16) (Vector512.Load(y + c) + xr * Vector512.Load(p + c)).Store(y + c);
                for (; c < n; c++) y[c] += x[r] * p[c];
            }
        }

        public void Dispose()
        {
            _stop = true;
            _helper.Join();
            foreach (var w in _w) NativeMemory.AlignedFree(w);
            NativeMemory.AlignedFree(_x);
            NativeMemory.AlignedFree(_y);
            NativeMemory.AlignedFree(_partial);
        }
    }
}
