using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Serving.Bench;
using Serving.Inference.Engine;
using Serving.Inference.Runtime;

/// <summary>
/// Prompt work two ways (issue 21): <c>rows</c> prompts of <c>chunk</c> tokens each prefilled one after another by the
/// ordinary prefill graph (what whole-step scheduling does), against the same prompts as chunks of one mixed step
/// through the packed blocks (what mixed steps do). Per repetition both run once, the order alternating; the figure is
/// prompt tokens per second and the paired ratio mixed / ordinary. With <c>--clock cpu</c> (and <c>--threads 1</c>, so
/// the timed thread does all the work) the times are the thread's CPU time, which a loaded machine does not inflate.
/// </summary>
internal static class PrefillBatching
{
    public static void Run(string dir, string shape, int[] chunks, int[] rowCounts, int reps, int context, int threads, bool cpuClock, string command, string jsonPath)
    {
        using var model = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = rowCounts.Max(), MaxContext = context, Threads = threads, PackedSteps = true });
        using var dec = new BatchDecoder(model, rowCounts.Max());
        Console.WriteLine($"{shape}: prompt tokens per second, ordinary prefills one row at a time vs one mixed step; {threads} threads; clock {(cpuClock ? "thread CPU time" : "wall")}; machine {BenchMachine.Cpu()}; load average {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");
        Console.WriteLine("| chunk tokens | rows | ordinary (tok/s) | mixed step (tok/s) | mixed / ordinary, median (min–max) |");
        Console.WriteLine("|---|---|---|---|---|");
        var rng = new Random(7);
        var results = new JsonArray();
        foreach (var chunk in chunks)
        {
            foreach (var rows in rowCounts)
            {
                if (chunk >= context || rows * chunk > dec.MaxStepTokens) continue;
                var prompts = Enumerable.Range(0, rows).Select(_ => Enumerable.Range(0, chunk).Select(_ => rng.Next(0, 255)).ToArray()).ToArray();
                var ordinary = new List<double>();
                var mixed = new List<double>();
                for (var r = -1; r < reps; r++) // r = -1: warm-up (bindings for this token count)
                {
                    var mixedFirst = r % 2 != 0;
                    var a = mixedFirst ? Mixed(dec, prompts, cpuClock) : 0;
                    var o = Ordinary(dec, prompts, cpuClock);
                    if (!mixedFirst) a = Mixed(dec, prompts, cpuClock);
                    if (r < 0) continue;
                    ordinary.Add(rows * chunk / o);
                    mixed.Add(rows * chunk / a);
                }
                var ratios = mixed.Zip(ordinary, (m, o) => m / o).ToList();
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"| {chunk} | {rows} | {Stats.Median(ordinary):F0} | {Stats.Median(mixed):F0} | {Stats.Median(ratios):F3} ({ratios.Min():F3}–{ratios.Max():F3}) |"));
                results.Add(new JsonObject
                {
                    ["chunk"] = chunk, ["rows"] = rows, ["ordinary_tokens_per_s"] = Stats.Median(ordinary),
                    ["mixed_tokens_per_s"] = Stats.Median(mixed), ["mixed_over_ordinary"] = Stats.Median(ratios),
                });
            }
        }
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(jsonPath))!);
        File.WriteAllText(jsonPath, new JsonObject
        {
            ["command"] = command, ["machine"] = BenchMachine.Cpu(), ["threads"] = threads, ["clock"] = cpuClock ? "thread_cpu" : "wall", ["results"] = results,
        }.ToJsonString());
    }

    private static double Ordinary(BatchDecoder dec, int[][] prompts, bool cpuClock)
    {
        var seqs = prompts.Select(_ => dec.TryAllocate()!).ToArray();
        var (wall, cpu) = (Stopwatch.GetTimestamp(), cpuClock ? BenchClock.ThreadCpuSeconds() : 0);
        for (var i = 0; i < prompts.Length; i++) dec.Prefill(seqs[i], prompts[i]);
        var seconds = cpuClock ? BenchClock.ThreadCpuSeconds() - cpu : Stopwatch.GetElapsedTime(wall).TotalSeconds;
        foreach (var s in seqs) dec.Release(s);
        return seconds;
    }

    private static double Mixed(BatchDecoder dec, int[][] prompts, bool cpuClock)
    {
        var seqs = prompts.Select(_ => dec.TryAllocate()!).ToArray();
        var (wall, cpu) = (Stopwatch.GetTimestamp(), cpuClock ? BenchClock.ThreadCpuSeconds() : 0);
        dec.BeginStep();
        for (var i = 0; i < prompts.Length; i++) dec.AddToStep(seqs[i], prompts[i]);
        dec.RunStep();
        var seconds = cpuClock ? BenchClock.ThreadCpuSeconds() - cpu : Stopwatch.GetElapsedTime(wall).TotalSeconds;
        foreach (var s in seqs) dec.Release(s);
        return seconds;
    }

    /// <summary>
    /// Decode steps two ways: the ordinary decode step (per-layer graphs with ONNX Runtime's attention) against a
    /// mixed step holding only decode rows (the packed blocks with <c>SlotAttention</c>), alternating per repetition;
    /// rows prefilled with <paramref name="prompt"/> random tokens first (not timed).
    /// </summary>
    public static void RunDecode(string dir, string shape, int[] batches, int steps, int prompt, int reps, int context, int threads, bool cpuClock, bool ceiling = false)
    {
        using var model = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = batches.Max(), MaxContext = context, Threads = threads, PackedSteps = true });
        if (ceiling)
        {
            RunDecodeAgainstCeiling(model, shape, batches, steps, prompt, reps, threads);
            return;
        }
        Console.WriteLine($"{shape}: decode tokens per second, ordinary decode step vs a mixed step of decode rows only; {steps} steps per run; {threads} threads; clock {(cpuClock ? "thread CPU time" : "wall")}; machine {BenchMachine.Cpu()}; load average {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");
        Console.WriteLine("| batch | ordinary (tok/s) | packed (tok/s) | packed / ordinary, median (min–max) |");
        Console.WriteLine("|---|---|---|---|");
        var rng = new Random(3);
        foreach (var b in batches)
        {
            using var dec = new BatchDecoder(model, b);
            Compare(b, reps, () => Steps(dec, b, steps, prompt, rng, false, cpuClock), () => Steps(dec, b, steps, prompt, rng, true, cpuClock), b * steps);
        }
    }

    /// <summary>
    /// Both decode steps against the MatMul-only ceiling at the same M, in one process: each repetition runs the
    /// ordinary step, the packed step and the ceiling (wall clock, mean step time of <paramref name="steps"/> steps
    /// each) and reports ceiling / step per repetition — the share of the step that its MatMuls alone would take.
    /// </summary>
    private static void RunDecodeAgainstCeiling(DecoderModel model, string shape, int[] batches, int steps, int prompt, int reps, int threads)
    {
        using var ceiling = new MatMulCeiling(model.Config, threads);
        Console.WriteLine($"{shape}: MatMul-only ceiling / decode step, paired per repetition; {steps} steps per run; {threads} threads; wall clock; machine {BenchMachine.Cpu()}; load average {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");
        Console.WriteLine("| batch | ordinary ms | packed ms | ceiling ms | ordinary: of ceiling, median (min–max) | packed: of ceiling, median (min–max) |");
        Console.WriteLine("|---|---|---|---|---|---|");
        var rng = new Random(3);
        foreach (var b in batches)
        {
            using var dec = new BatchDecoder(model, b);
            List<double> ordinary = [], packed = [], matmuls = [];
            for (var r = -1; r < reps; r++)
            {
                var o = Steps(dec, b, steps, prompt, rng, false, cpuClock: false) / steps;
                var p = Steps(dec, b, steps, prompt, rng, true, cpuClock: false) / steps;
                var m = ceiling.MeanStep(b, steps);
                if (r < 0) continue;
                ordinary.Add(o);
                packed.Add(p);
                matmuls.Add(m);
            }
            var ofOrdinary = matmuls.Zip(ordinary, (m, o) => m / o).ToList();
            var ofPacked = matmuls.Zip(packed, (m, p) => m / p).ToList();
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {b} | {Stats.Median(ordinary) * 1e3:F1} | {Stats.Median(packed) * 1e3:F1} | {Stats.Median(matmuls) * 1e3:F1} | {Stats.Median(ofOrdinary):P0} ({ofOrdinary.Min():P0}–{ofOrdinary.Max():P0}) | {Stats.Median(ofPacked):P0} ({ofPacked.Min():P0}–{ofPacked.Max():P0}) |"));
        }
    }

    /// <summary>
    /// The ordinary decode step of two loads of one checkpoint: plain (each block session holds its weights) and with
    /// packed steps (what <c>Node:MixedSteps</c> and <c>Node:EarlyExit</c> load: weights supplied through
    /// <c>AddInitializer</c> and one shared pre-packed copy, plus the packed side sessions); alternating per repetition.
    /// Same work, same graphs: a ratio away from 1 is the load's cost.
    /// </summary>
    public static void RunLoadVariants(string dir, string shape, int[] batches, int steps, int prompt, int reps, int context, int threads, bool cpuClock)
    {
        using var plain = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = batches.Max(), MaxContext = context, Threads = threads });
        using var packedLoad = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = batches.Max(), MaxContext = context, Threads = threads, PackedSteps = true });
        Console.WriteLine($"{shape}: ordinary decode step, plain load vs packed-steps load; {steps} steps per run; {threads} threads; clock {(cpuClock ? "thread CPU time" : "wall")}; machine {BenchMachine.Cpu()}; load average {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");
        Console.WriteLine("| batch | plain load (tok/s) | packed-steps load (tok/s) | packed load / plain, median (min–max) |");
        Console.WriteLine("|---|---|---|---|");
        var rng = new Random(3);
        foreach (var b in batches)
        {
            using var a = new BatchDecoder(plain, b);
            using var p = new BatchDecoder(packedLoad, b);
            Compare(b, reps, () => Steps(a, b, steps, prompt, rng, false, cpuClock), () => Steps(p, b, steps, prompt, rng, false, cpuClock), b * steps);
        }
    }

    /// <summary>
    /// Runs <paramref name="baseline"/> and <paramref name="other"/> (each returns seconds for <paramref name="tokens"/>
    /// tokens) once per repetition after a warm-up pair, the order alternating, and prints one table row: both
    /// throughputs and the paired ratio other / baseline, median (min–max).
    /// </summary>
    private static void Compare(int batch, int reps, Func<double> baseline, Func<double> other, int tokens)
    {
        var first = new List<double>();
        var second = new List<double>();
        for (var r = -1; r < reps; r++)
        {
            var otherFirst = r % 2 != 0;
            var x = otherFirst ? other() : 0;
            var o = baseline();
            if (!otherFirst) x = other();
            if (r < 0) continue;
            first.Add(tokens / o);
            second.Add(tokens / x);
        }
        var ratios = second.Zip(first, (x, o) => x / o).ToList();
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"| {batch} | {Stats.Median(first):F0} | {Stats.Median(second):F0} | {Stats.Median(ratios):F3} ({ratios.Min():F3}–{ratios.Max():F3}) |"));
    }

    private static double Steps(BatchDecoder dec, int batch, int steps, int prompt, Random rng, bool packed, bool cpuClock)
    {
        var v = dec.Model.Config.VocabSize;
        var seqs = new Sequence[batch];
        var tokens = new int[prompt];
        for (var i = 0; i < batch; i++)
        {
            for (var t = 0; t < prompt; t++) tokens[t] = rng.Next(0, 255);
            seqs[i] = dec.TryAllocate()!;
            seqs[i].PendingToken = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(dec.Prefill(seqs[i], tokens));
        }
        var (wall, cpu) = (Stopwatch.GetTimestamp(), cpuClock ? BenchClock.ThreadCpuSeconds() : 0);
        for (var step = 0; step < steps; step++)
        {
            ReadOnlySpan<float> logits;
            if (packed)
            {
                dec.BeginStep();
                foreach (var s in seqs) dec.AddToStep(s);
                logits = dec.RunStep();
                for (var i = 0; i < batch; i++) seqs[i].PendingToken = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits.Slice(i * v, v));
            }
            else
            {
                logits = dec.Decode();
                for (var r = 0; r < batch; r++) dec.Active[r].PendingToken = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits.Slice(r * v, v));
            }
        }
        var seconds = cpuClock ? BenchClock.ThreadCpuSeconds() - cpu : Stopwatch.GetElapsedTime(wall).TotalSeconds;
        foreach (var s in seqs) dec.Release(s);
        return seconds;
    }
}
