using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Serving.Bench;
using Serving.Inference.Engine;
using Serving.Inference.Runtime;

/// <summary>
/// Where a decode step's time goes (issue 17, part 3): the engine decodes <c>steps</c> greedy steps at each batch size
/// with ONNX Runtime's profiler on (<see cref="OrtRuntime.ProfileVariable"/>), then reads every session's trace and
/// sums, over the decode steps only (each session's last <c>steps</c> runs), the kernel time per operator type, the
/// time inside <c>Run</c> but outside kernels (the session's own overhead), and the step time outside every session
/// (embedding, bindings, the caller's argmax). The profiler adds a little to each kernel; read shares, not totals.
/// </summary>
internal static class StepProfile
{
    public static void Run(string dir, string shape, int[] batches, int steps, int prompt, int context, int threads, bool packed, string command, string jsonPath)
    {
        var results = new JsonArray();
        foreach (var b in batches)
        {
            var folder = Directory.CreateTempSubdirectory("step-profile-");
            Environment.SetEnvironmentVariable(OrtRuntime.ProfileVariable, Path.Combine(folder.FullName, "s"));
            double wallMs;
            var sessions = 0;
            try
            {
                using (var model = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = b, MaxContext = context, Threads = threads, PackedSteps = packed }))
                using (var dec = new BatchDecoder(model, b))
                {
                    sessions = model.Config.NumLayers + 1;
                    var rng = new Random(1);
                    // A warm-up run first: the traces keep only the last run's steps.
                    if (packed)
                    {
                        PackedGreedy(dec, b, steps, prompt, rng);
                        wallMs = PackedGreedy(dec, b, steps, prompt, rng) * 1000 / steps;
                    }
                    else
                    {
                        DecodeRuns.Greedy(dec, b, steps, prompt, rng);
                        wallMs = DecodeRuns.Greedy(dec, b, steps, prompt, rng) * 1000 / steps;
                    }
                }
            }
            finally
            {
                Environment.SetEnvironmentVariable(OrtRuntime.ProfileVariable, null);
            }
            var files = folder.GetFiles("*.json");
            if (files.Length < sessions) throw new InvalidOperationException($"{files.Length} profile files for {sessions} sessions in {folder.FullName}");
            var (perOp, runMs, kernelMs) = Read(files, steps);
            folder.Delete(recursive: true);
            var outside = wallMs - runMs;
            var sessionOverhead = runMs - kernelMs;
            Console.WriteLine($"## {shape}, batch {b}, {(packed ? "packed blocks (SlotAttention)" : "ordinary decode step")}: {wallMs:F2} ms per step (profiled), {threads} threads");
            Console.WriteLine("| part | ms per step | share |");
            Console.WriteLine("|---|---|---|");
            var row = new JsonObject { ["batch"] = b, ["step_ms"] = wallMs, ["outside_sessions_ms"] = outside, ["session_overhead_ms"] = sessionOverhead };
            var ops = new JsonObject();
            foreach (var (op, ms) in perOp.OrderByDescending(kv => kv.Value))
            {
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {op} | {ms:F3} | {ms / wallMs:P1} |"));
                ops[op] = ms;
            }
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| inside Run, outside kernels | {sessionOverhead:F3} | {sessionOverhead / wallMs:P1} |"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| outside every session | {outside:F3} | {outside / wallMs:P1} |"));
            row["kernel_ms_by_op"] = ops;
            results.Add(row);
        }
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(jsonPath))!);
        File.WriteAllText(jsonPath, new JsonObject
        {
            ["command"] = command, ["machine"] = BenchMachine.Cpu(), ["threads"] = threads, ["steps"] = steps, ["results"] = results,
            ["date"] = DateTime.UtcNow.ToString("u", CultureInfo.InvariantCulture),
        }.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        Console.WriteLine($"wrote {jsonPath}");
    }

    /// <summary>
    /// Greedy decoding through the packed blocks only (the prompts as one mixed step, then mixed steps of decode rows),
    /// so that the ordinary blocks' sessions hold no runs and the packed ones end with the decode steps. Seconds of the
    /// decode steps.
    /// </summary>
    private static double PackedGreedy(BatchDecoder dec, int batch, int steps, int prompt, Random rng)
    {
        var v = dec.Model.Config.VocabSize;
        var seqs = new Sequence[batch];
        var prompts = new int[batch][];
        var perStep = Math.Max(1, dec.MaxStepTokens / prompt); // prompts per mixed step
        for (var from = 0; from < batch; from += perStep)
        {
            var to = Math.Min(batch, from + perStep);
            dec.BeginStep();
            for (var i = from; i < to; i++)
            {
                prompts[i] = Enumerable.Range(0, prompt).Select(_ => rng.Next(0, 255)).ToArray();
                seqs[i] = dec.TryAllocate()!;
                dec.AddToStep(seqs[i], prompts[i]);
            }
            var first = dec.RunStep();
            for (var i = from; i < to; i++) seqs[i].PendingToken = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(first.Slice((i - from) * v, v));
        }
        var sw = Stopwatch.StartNew();
        for (var step = 0; step < steps; step++)
        {
            dec.BeginStep();
            foreach (var s in seqs) dec.AddToStep(s);
            var logits = dec.RunStep();
            for (var i = 0; i < batch; i++) seqs[i].PendingToken = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits.Slice(i * v, v));
        }
        var seconds = sw.Elapsed.TotalSeconds;
        foreach (var s in seqs) dec.Release(s);
        return seconds;
    }

    /// <summary>
    /// Sums each trace's last <paramref name="steps"/> <c>model_run</c> events and the kernel events inside them, per
    /// operator type; milliseconds per step.
    /// </summary>
    private static (Dictionary<string, double> PerOp, double RunMs, double KernelMs) Read(FileInfo[] files, int steps)
    {
        var perOp = new Dictionary<string, double>();
        double runUs = 0, kernelUs = 0;
        foreach (var file in files)
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(file.FullName));
            var runs = new List<(long Start, long End)>();
            var kernels = new List<(long Start, long Dur, string Op)>();
            foreach (var e in doc.RootElement.EnumerateArray())
            {
                if (!e.TryGetProperty("dur", out var durValue) || !e.TryGetProperty("ts", out var tsValue)) continue;
                long ts = tsValue.GetInt64(), dur = durValue.GetInt64();
                var name = e.GetProperty("name").GetString() ?? "";
                var cat = e.TryGetProperty("cat", out var catValue) ? catValue.GetString() : null;
                if (cat == "Session" && name == "model_run") runs.Add((ts, ts + dur));
                else if (cat == "Node" && name.EndsWith("_kernel_time", StringComparison.Ordinal)
                         && e.TryGetProperty("args", out var args) && args.TryGetProperty("op_name", out var op))
                {
                    kernels.Add((ts, dur, op.GetString() ?? "?"));
                }
            }
            runs.Sort();
            foreach (var (start, end) in runs.Skip(Math.Max(0, runs.Count - steps)))
            {
                runUs += end - start;
                foreach (var k in kernels)
                {
                    if (k.Start < start || k.Start >= end) continue;
                    kernelUs += k.Dur;
                    perOp[k.Op] = perOp.GetValueOrDefault(k.Op) + k.Dur;
                }
            }
        }
        foreach (var op in perOp.Keys.ToList()) perOp[op] /= 1000.0 * steps;
        return (perOp, runUs / 1000 / steps, kernelUs / 1000 / steps);
    }
}
