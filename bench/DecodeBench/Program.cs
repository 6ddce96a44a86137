using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.OnnxRuntime;
using Serving.Bench;
using Serving.Fixtures;
using Serving.Inference.Engine;
using Serving.Inference.Graphs;
using Serving.Inference.Runtime;

// Decode throughput of the engine against (a) the batch-1 memory roofline, (b) the machine's fp32 GEMM throughput
// and (c) PyTorch eager on the same checkpoint, alternating engine and PyTorch runs (BENCHMARKS.md).
// usage: DecodeBench [--shape gpt2-small] [--batches 1,8,32] [--steps 32] [--reps 5] [--prompt 16] [--context 256]
//                    [--threads N] [--no-torch] [--json FILE] [--md docs/benchmarks.md] [--fp16] [--cuda]
//        (--fp16: the blocks in fp16, RuntimeOptions.Precision; --cuda: the CUDA provider, in a -p:UseCuda=true build)
//        (--ceiling: after each rep, the MatMul-only ceiling below at the same M in the same process; per-rep ratios)
//        DecodeBench --matmul-ceiling [--shape ..] [--batches ..]: the step time of the projection MatMuls alone
//        DecodeBench --stream-probe [--shape ..] [--reps 6]: a batch-1 step's weight bytes streamed three ways, alternating in one
//                    process: the bandwidth probe, ONNX Runtime's MatMul alone at M = 1, and an AVX-512 GEMV of our own
//        DecodeBench --formats fp32,int8,int4 [--block 32] [--accuracy 4] [--quantize-head] [--torch] [--shape ..] [--batches ..]:
//                    the same decode run for each weight format, interleaved (each rep runs every format once, the order
//                    rotating), after a 2 s warm-up per format; ratios are paired per rep against the first format
//        DecodeBench --prefill-batching [--chunks 16,96,256] [--rows 1,4,8] [--clock wall|cpu] [--context 512]: prompt
//                    work as ordinary one-row prefills vs one mixed step of all rows' chunks (issue 21)
//        DecodeBench --packed-decode [--batches ..] [--clock wall|cpu] [--ceiling]: the ordinary decode step vs a mixed step of
//                    decode rows only (packed blocks, SlotAttention), alternating (--ceiling: both against the MatMul-only
//                    ceiling at the same M, per repetition, in one process)
//        DecodeBench --load-variants [--batches ..] [--clock wall|cpu]: the ordinary decode step of a plain load vs a
//                    packed-steps load (shared weights, pre-packed container), alternating
//        DecodeBench --profile [--packed] [--batches ..] [--steps ..]: ONNX Runtime's profiler over the decode steps; kernel time per
//                    operator type, session overhead and the time outside sessions, per step
var opts = Args.Parse(args);
var inv = CultureInfo.InvariantCulture;
var threads = opts.Int("threads", Environment.ProcessorCount);
OrtRuntime.EnsureInitialized(threads);
var shape = opts.Str("shape", "gpt2-small");
var batches = opts.Str("batches", "1,8,32").Split(',').Select(int.Parse).ToArray();
int steps = opts.Int("steps", 32), reps = opts.Int("reps", 5), prompt = opts.Int("prompt", 16), context = opts.Int("context", 256);
var dir = Path.GetFullPath(Path.Combine(".fixtures", shape));
if (!File.Exists(Path.Combine(dir, "model.safetensors")))
{
    Console.WriteLine($"writing random {shape} checkpoint to {dir}");
    FixtureCheckpoint.Write(dir, FixtureShape.Named(shape));
}

if (opts.Flag("matmul-ceiling"))
{
    var cfg = Serving.Checkpoints.ModelConfig.Load(Path.Combine(dir, "config.json"));
    Console.WriteLine($"{shape}: ORT fp32 GEMM probe (256 × 1024 × 4096) {Machine.GemmFlops(threads) / 1e9:F0} GFLOP/s; {threads} threads");
    MatMulCeiling.Run(cfg, batches, threads, reps);
    return 0;
}

if (opts.Flag("stream-probe"))
{
    StreamProbe.Run(Serving.Checkpoints.ModelConfig.Load(Path.Combine(dir, "config.json")), opts.Int("reps", 6));
    return 0;
}

if (opts.Flag("formats"))
{
    var formats = opts.Str("formats", "fp32,int8,int4").Split(',').Select(f => Enum.Parse<WeightFormat>(f, ignoreCase: true)).ToArray();
    FormatComparison.Run(dir, shape, formats, batches, steps, reps, prompt, context, threads, opts.Int("block", 32), opts.Int("accuracy", 4),
        opts.Flag("quantize-head"), opts.Flag("torch"), "dotnet run -c Release --project bench/DecodeBench -- " + string.Join(' ', args), opts.Str("json", $"bench/results/formats-{shape}.json"));
    return 0;
}

if (opts.Flag("prefill-batching"))
{
    PrefillBatching.Run(dir, shape, opts.Str("chunks", "16,96,256").Split(',').Select(int.Parse).ToArray(), opts.Str("rows", "1,4,8").Split(',').Select(int.Parse).ToArray(),
        reps, opts.Int("context", 512), threads, opts.Str("clock", "wall") == "cpu", "dotnet run -c Release --project bench/DecodeBench -- " + string.Join(' ', args),
        opts.Str("json", $"bench/results/prefill-batching-{shape}.json"));
    return 0;
}

if (opts.Flag("profile"))
{
    StepProfile.Run(dir, shape, batches, steps, prompt, context, threads, opts.Flag("packed"), "dotnet run -c Release --project bench/DecodeBench -- " + string.Join(' ', args),
        opts.Str("json", $"bench/results/step-profile-{shape}.json"));
    return 0;
}

if (opts.Flag("load-variants"))
{
    PrefillBatching.RunLoadVariants(dir, shape, batches, steps, prompt, reps, context, threads, opts.Str("clock", "wall") == "cpu");
    return 0;
}

if (opts.Flag("packed-decode"))
{
    PrefillBatching.RunDecode(dir, shape, batches, steps, prompt, reps, context, threads, opts.Str("clock", "wall") == "cpu", opts.Flag("ceiling"));
    return 0;
}

var compareFused = opts.Flag("fused");
using var model = DecoderModel.Load(dir, new RuntimeOptions
{
    MaxBatch = batches.Max(), MaxContext = context, Threads = threads, FusedDecode = compareFused,
    Precision = opts.Flag("fp16") ? ComputePrecision.Float16 : ComputePrecision.Float32,
    ExecutionProvider = opts.Flag("cuda") ? ExecutionProviderKind.Cuda : ExecutionProviderKind.Cpu,
});
var c = model.Config;
long weightBytes = WeightBytes(c);
Console.WriteLine($"{shape}: {weightBytes / 1e6:F0} MB fp32 weights read per step; load {model.LoadTime.TotalSeconds:F1} s; {threads} threads; blocks {model.Options.Precision}, {model.Options.ExecutionProvider}");
var bandwidthProbe = new Bandwidth.Probe();
var bandwidth = bandwidthProbe.Read(threads, tries: 5);
var gemm = Machine.GemmFlops(threads);
Console.WriteLine($"machine: {BenchMachine.Cpu()}, memory read bandwidth {bandwidth / 1e9:F1} GB/s, ORT fp32 GEMM {gemm / 1e9:F1} GFLOP/s");

TorchServer? torch = opts.Flag("no-torch") || compareFused ? null : TorchServer.Start(dir, context, threads);
if (compareFused)
{
    // Split (one session per layer, the default) against the fused blocks (RuntimeOptions.FusedDecode), alternating on one decoder.
    Console.WriteLine("| shape | batch | split tok/s | fused tok/s | split/fused (min–max) |");
    var fusedRows = new JsonArray();
    foreach (var b in batches)
    {
        using var dec = new BatchDecoder(model, b);
        var rng = new Random(1);
        var split = new List<double>();
        var fused = new List<double>();
        for (var r = -1; r < reps; r++)
        {
            dec.UseFusedDecode = false;
            var s1 = DecodeRuns.Greedy(dec, b, steps, prompt, rng);
            dec.UseFusedDecode = true;
            var s2 = DecodeRuns.Greedy(dec, b, steps, prompt, rng);
            if (r < 0) continue;
            split.Add(b * steps / s1);
            fused.Add(b * steps / s2);
        }
        var ratios = split.Zip(fused, (x, y) => x / y).ToList();
        Console.WriteLine($"| {shape} | {b} | {Stats.Median(split):F1} | {Stats.Median(fused):F1} | {Stats.Median(ratios):F3} ({ratios.Min():F3}–{ratios.Max():F3}) |");
        fusedRows.Add(new JsonObject { ["batch"] = b, ["split_tokens_per_s"] = Stats.Median(split), ["fused_tokens_per_s"] = Stats.Median(fused), ["split_over_fused"] = Stats.Median(ratios) });
    }
    var fusedPath = opts.Str("json", $"bench/results/split-{shape}.json");
    Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(fusedPath))!);
    File.WriteAllText(fusedPath, new JsonObject { ["command"] = "dotnet run -c Release --project bench/DecodeBench -- " + string.Join(' ', args), ["machine"] = BenchMachine.Cpu(), ["results"] = fusedRows }.ToJsonString());
    return 0;
}
// The probe read beside a batch-1 rep, once ONNX Runtime's pool threads have stopped spinning (they would share the
// cores with the probe's threads and make the machine look slower than it is).
double QuietRead()
{
    Thread.Sleep(200);
    return bandwidthProbe.Read(threads, tries: 3);
}

var results = new JsonArray();
// --ceiling: after each rep, the MatMul-only ceiling at the same M, in this process (the machine drifts between minutes).
using var pairedCeiling = opts.Flag("ceiling") ? new MatMulCeiling(c, threads) : null;
foreach (var b in batches)
{
    using var dec = new BatchDecoder(model, b);
    var rng = new Random(1);
    var ours = new List<double>();
    var theirs = new List<double>();
    var paired = new List<double>(); // batch 1: each rep's rate against the bandwidth read just before and just after it
    var unsteady = 0;
    var ofCeiling = new List<double>(); // --ceiling: MatMul-only step / engine step, per rep
    for (var r = -1; r < reps; r++) // r = -1 is the warm-up pair
    {
        var before = b == 1 && r >= 0 ? QuietRead() : 0;
        var seconds = DecodeRuns.Greedy(dec, b, steps, prompt, rng);
        var after = b == 1 && r >= 0 ? QuietRead() : 0;
        var torchSeconds = torch?.Run(b, steps, prompt);
        var ceilingSeconds = pairedCeiling?.MeanStep(b, steps);
        if (r < 0) continue;
        ours.Add(b * steps / seconds);
        if (ceilingSeconds is { } cs) ofCeiling.Add(cs / (seconds / steps));
        if (b == 1)
        {
            paired.Add(ours[^1] / ((before + after) / 2 / weightBytes));
            if (Math.Abs(before - after) > 0.1 * Math.Max(before, after)) unsteady++;
        }
        if (torchSeconds is { } ts) theirs.Add(b * steps / ts);
    }
    var med = Stats.Median(ours);
    var stepMs = b / med * 1000;
    var flops = 2.0 * ParamsInMatMuls(c) * b / (stepMs / 1000);
    var roofline = bandwidth / weightBytes; // steps/s at batch 1 if only weight reads counted
    var row = new JsonObject
    {
        ["shape"] = shape, ["batch"] = b, ["tokens_per_s"] = med, ["step_ms"] = stepMs,
        ["tokens_per_s_min"] = ours.Min(), ["tokens_per_s_max"] = ours.Max(),
        ["roofline_fraction"] = b == 1 ? med / roofline : null,
        ["roofline_fraction_paired_median"] = b == 1 ? Stats.Median(paired) : null,
        ["roofline_fraction_paired_min"] = b == 1 ? paired.Min() : null,
        ["roofline_fraction_paired_max"] = b == 1 ? paired.Max() : null,
        ["gemm_fraction"] = flops / gemm,
    };
    if (ofCeiling.Count > 0)
    {
        row["matmul_ceiling_fraction_median"] = Stats.Median(ofCeiling);
        row["matmul_ceiling_fraction_min"] = ofCeiling.Min();
        row["matmul_ceiling_fraction_max"] = ofCeiling.Max();
    }
    var line = $"| {shape} | {b} | {med:F1} | {stepMs:F1} | " + (b == 1 ? $"{med / roofline:P0} of {roofline:F1}; paired per rep {Stats.Median(paired):P0} ({paired.Min():P0}–{paired.Max():P0}{(unsteady > 0 ? $", {unsteady} of {reps} reps with the bandwidth moving > 10%" : "")})" : "–") + $" | {flops / gemm:P0} ({flops / 1e9:F0} GFLOP/s) |";
    if (ofCeiling.Count > 0) line += $" {Stats.Median(ofCeiling):P0} of the MatMul-only ceiling, paired per rep ({ofCeiling.Min():P0}–{ofCeiling.Max():P0}) |";
    if (theirs.Count > 0)
    {
        var ratios = ours.Zip(theirs, (x, y) => x / y).ToList();
        row["torch_tokens_per_s"] = Stats.Median(theirs);
        row["ratio_vs_torch_median"] = Stats.Median(ratios);
        row["ratio_vs_torch_min"] = ratios.Min();
        row["ratio_vs_torch_max"] = ratios.Max();
        line += $" {Stats.Median(theirs):F1} | {Stats.Median(ratios):F2}× ({ratios.Min():F2}–{ratios.Max():F2}) |";
    }
    else
    {
        line += " – | – |";
    }
    Console.WriteLine(line);
    results.Add(row);
}
torch?.Dispose();

var command = "dotnet run -c Release --project bench/DecodeBench -- " + string.Join(' ', args);
var doc = new JsonObject
{
    ["command"] = command, ["machine"] = BenchMachine.Cpu(), ["threads"] = threads, ["provider"] = "CPU",
    ["bandwidth_gb_s"] = bandwidth / 1e9, ["gemm_gflop_s"] = gemm / 1e9, ["weight_mb"] = weightBytes / 1e6,
    ["steps"] = steps, ["reps"] = reps, ["prompt"] = prompt, ["context"] = context, ["results"] = results,
    ["date"] = DateTime.UtcNow.ToString("u", inv),
};
var jsonPath = opts.Str("json", $"bench/results/decode-{shape}.json");
Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(jsonPath))!);
File.WriteAllText(jsonPath, doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
Console.WriteLine($"wrote {jsonPath}");
return 0;



static long ParamsInMatMuls(Serving.Checkpoints.ModelConfig c)
{
    long d = c.HiddenSize, f = c.IntermediateSize, q = c.NumHeads * c.HeadDim, kv = c.NumKvHeads * c.HeadDim;
    var ffn = c.Architecture == Serving.Checkpoints.ModelArchitecture.Gpt2 ? 2 * d * f : 3 * d * f;
    return c.NumLayers * (d * (q + 2 * kv) + q * d + ffn) + (long)c.VocabSize * d;
}

static long WeightBytes(Serving.Checkpoints.ModelConfig c) => 4 * ParamsInMatMuls(c);

internal sealed class Args(Dictionary<string, string> values)
{
    public static Args Parse(string[] args)
    {
        var d = new Dictionary<string, string>();
        for (var i = 0; i < args.Length; i++)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal)) continue;
            var key = args[i][2..];
            d[key] = i + 1 < args.Length && !args[i + 1].StartsWith("--", StringComparison.Ordinal) ? args[++i] : "true";
        }
        return new Args(d);
    }

    public string Str(string key, string fallback) => values.GetValueOrDefault(key, fallback);
    public int Int(string key, int fallback) => values.TryGetValue(key, out var v) ? int.Parse(v, CultureInfo.InvariantCulture) : fallback;
    public bool Flag(string key) => values.ContainsKey(key);
}

internal static class Stats
{
    public static double Median(IEnumerable<double> values)
    {
        var s = values.Order().ToArray();
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }
}

internal static class Machine
{
    /// <summary>fp32 GEMM FLOP/s of ONNX Runtime's MatMul on [256, 1024] × [1024, 4096] (weights as an initializer), best of 5.</summary>
    public static double GemmFlops(int threads)
    {
        const int m = 256, k = 1024, n = 4096;
        var w = new float[k * n];
        for (var i = 0; i < w.Length; i++) w[i] = (i % 7) * 0.01f;
        var bytes = Serving.Inference.Graphs.GemmProbe.Build(w, k, n);
        using var so = OrtRuntime.CreateSessionOptions(new RuntimeOptions { Threads = threads });
        using var session = new InferenceSession(bytes, so);
        var x = new float[m * k];
        using var input = OrtValue.CreateTensorValueFromMemory(x, [m, k]);
        using var run = new RunOptions();
        var best = double.MaxValue;
        for (var rep = 0; rep < 6; rep++)
        {
            var sw = Stopwatch.StartNew();
            using var outputs = session.Run(run, ["x"], [input], ["y"]);
            if (rep > 0) best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        return 2.0 * m * k * n / best;
    }
}

internal sealed class TorchServer : IDisposable
{
    private readonly Process _process;

    private TorchServer(Process process) => _process = process;

    public static TorchServer? Start(string dir, int context, int threads)
    {
        var script = Path.GetFullPath(Path.Combine("bench", "torch_decode.py"));
        var psi = new ProcessStartInfo("/usr/bin/python3", [script, dir, context.ToString(CultureInfo.InvariantCulture), threads.ToString(CultureInfo.InvariantCulture)])
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        // The image pins OpenBLAS to its Haswell kernels for old builds' sake; the baseline gets the kernels OpenBLAS
        // itself picks (checked against float64 in the script), so that it is the best version of itself.
        psi.Environment.Remove("OPENBLAS_CORETYPE");
        psi.Environment.Remove("OPENBLAS_L2_SIZE");
        var p = Process.Start(psi)!;
        var ready = p.StandardOutput.ReadLine();
        if (ready is null)
        {
            Console.WriteLine("PyTorch baseline unavailable (is python3-torch installed for /usr/bin/python3?)");
            return null;
        }
        Console.WriteLine($"PyTorch eager baseline: {ready}");
        return new TorchServer(p);
    }

    public double Run(int batch, int steps, int prompt)
    {
        _process.StandardInput.WriteLine($"{batch} {steps} {prompt}");
        var line = _process.StandardOutput.ReadLine() ?? throw new InvalidOperationException("PyTorch baseline exited");
        return JsonNode.Parse(line)!["seconds"]!.GetValue<double>();
    }

    public void Dispose()
    {
        _process.StandardInput.Close();
        _process.WaitForExit(10_000);
        _process.Dispose();
    }
}

/// <summary>
/// What ONNX Runtime's MatMul alone reaches at decode shapes: one session per layer holding that layer's projection
/// MatMuls (random weights of the checkpoint's shapes) plus the LM head, run in sequence like a decode step, M = batch.
/// Same machine, same thread pool: the engine's step cannot be faster than this.
/// </summary>
sealed class MatMulCeiling : IDisposable
{
    private readonly List<InferenceSession> _sessions = [];
    private readonly Random _rng = new(1);
    private readonly RunOptions _run = new();
    private readonly Dictionary<int, List<(InferenceSession S, OrtIoBinding Io, List<OrtValue> Owned)>> _bound = [];

    public MatMulCeiling(Serving.Checkpoints.ModelConfig c, int threads)
    {
        int d = c.HiddenSize, f = c.IntermediateSize, q = c.NumHeads * c.HeadDim, kv = c.NumKvHeads * c.HeadDim, v = c.VocabSize;
        var llama = c.Architecture == Serving.Checkpoints.ModelArchitecture.Llama;
        var shapes = new (int K, int N)[] { (d, q + 2 * kv), (q, d), (d, llama ? 2 * f : f), (f, d) };
        using var so = OrtRuntime.CreateSessionOptions(new RuntimeOptions { Threads = threads });
        for (var l = 0; l < c.NumLayers; l++)
        {
            _sessions.Add(new InferenceSession(Serving.Inference.Graphs.GemmProbe.BuildLayer(shapes.Select(s => (W(s.K * s.N), s.K, s.N)).ToList()), so));
        }
        _sessions.Add(new InferenceSession(Serving.Inference.Graphs.GemmProbe.BuildLayer([(W(d * v), d, v)]), so));
        FlopsPerRow = 2L * (c.NumLayers * shapes.Sum(s => (long)s.K * s.N) + (long)d * v);
    }

    public long FlopsPerRow { get; }

    /// <summary>One pass over every unit at M = <paramref name="batch"/>; seconds.</summary>
    public double Step(int batch)
    {
        if (!_bound.TryGetValue(batch, out var bindings)) _bound[batch] = bindings = Bind(batch);
        var sw = Stopwatch.StartNew();
        foreach (var (s, io, _) in bindings) s.RunWithBinding(_run, io);
        return sw.Elapsed.TotalSeconds;
    }

    /// <summary>Mean step time of <paramref name="passes"/> passes after three unmeasured ones (as a decode run's steps are timed); seconds.</summary>
    public double MeanStep(int batch, int passes)
    {
        for (var i = 0; i < 3; i++) Step(batch);
        return Enumerable.Range(0, passes).Sum(_ => Step(batch)) / passes;
    }

    public static void Run(Serving.Checkpoints.ModelConfig c, int[] batches, int threads, int reps)
    {
        using var ceiling = new MatMulCeiling(c, threads);
        Console.WriteLine("| batch (M) | MatMul-only step ms (median, min) | GFLOP/s |");
        Console.WriteLine("|---|---|---|");
        foreach (var b in batches)
        {
            var times = new List<double>();
            for (var r = -3; r < Math.Max(reps, 5) * 4; r++)
            {
                var t = ceiling.Step(b) * 1000;
                if (r >= 0) times.Add(t);
            }
            Console.WriteLine($"| {b} | {Stats.Median(times):F2} ({times.Min():F2}) | {ceiling.FlopsPerRow * b / (times.Min() / 1000) / 1e9:F0} |");
        }
    }

    private List<(InferenceSession, OrtIoBinding, List<OrtValue>)> Bind(int b)
    {
        var bindings = new List<(InferenceSession, OrtIoBinding, List<OrtValue>)>();
        foreach (var s in _sessions)
        {
            var io = s.CreateIoBinding();
            var owned = new List<OrtValue>();
            var names = s.InputMetadata.Keys.ToList();
            for (var i = 0; i < names.Count; i++)
            {
                var k = (int)s.InputMetadata[names[i]].Dimensions[1];
                var n = (int)s.OutputMetadata[$"y{i}"].Dimensions[1];
                var x = OrtValue.CreateTensorValueFromMemory(W(b * k), [b, k]);
                var y = OrtValue.CreateTensorValueFromMemory(new float[b * n], [b, n]);
                owned.Add(x);
                owned.Add(y);
                io.BindInput(names[i], x);
                io.BindOutput($"y{i}", y);
            }
            bindings.Add((s, io, owned));
        }
        return bindings;
    }

    private float[] W(int n)
    {
        var w = new float[n];
        for (var i = 0; i < n; i++) w[i] = (float)(_rng.NextDouble() - 0.5) * 0.02f;
        return w;
    }

    public void Dispose()
    {
        foreach (var bindings in _bound.Values)
        {
            foreach (var (_, io, owned) in bindings)
            {
                io.Dispose();
                foreach (var o in owned) o.Dispose();
            }
        }
        foreach (var s in _sessions) s.Dispose();
        _run.Dispose();
    }
}

/// <summary>One timed greedy decode run: <c>batch</c> random prompts prefilled (not timed), then <c>steps</c> decode steps.</summary>
internal static class DecodeRuns
{
    public static double Greedy(BatchDecoder dec, int batch, int steps, int prompt, Random rng)
    {
        var tokens = new int[prompt];
        var seqs = new List<Sequence>();
        var v = dec.Model.Config.VocabSize;
        for (var i = 0; i < batch; i++)
        {
            for (var t = 0; t < prompt; t++) tokens[t] = rng.Next(0, 255);
            var s = dec.TryAllocate()!;
            s.PendingToken = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(dec.Prefill(s, tokens));
            seqs.Add(s);
        }
        var sw = Stopwatch.StartNew();
        for (var step = 0; step < steps; step++)
        {
            var logits = dec.Decode();
            for (var r = 0; r < batch; r++) dec.Active[r].PendingToken = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits.Slice(r * v, v));
        }
        var seconds = sw.Elapsed.TotalSeconds;
        foreach (var s in seqs) dec.Release(s);
        return seconds;
    }
}
