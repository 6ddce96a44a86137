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
        Console.WriteLine($"{shape}: prompt tokens per second, ordinary prefills one row at a time vs one mixed step; {threads} threads; clock {(cpuClock ? "thread CPU time" : "wall")}; machine {Machine.Cpu()}; load average {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");
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
            ["command"] = command, ["machine"] = Machine.Cpu(), ["threads"] = threads, ["clock"] = cpuClock ? "thread_cpu" : "wall", ["results"] = results,
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
}
