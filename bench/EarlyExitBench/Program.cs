using System.Diagnostics;
using System.Globalization;
using System.Numerics.Tensors;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Serving.Bench;
using Serving.Checkpoints;
using Serving.Checkpoints.ExitProbes;
using Serving.Checkpoints.RewardHeads;
using Serving.Fixtures;
using Serving.Inference.Chat;
using Serving.Inference.Decoding;
using Serving.Inference.EarlyExit;
using Serving.Inference.Engine;
using Serving.Inference.Runtime;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;
using Serving.Inference.Tokenization;

// FFN early exit (issue #13), in process on the engine (demo model, its exit probe and eval splits):
//  calibrate: per criterion, the threshold with the most layers skipped at ≥ --target top-1 agreement, teacher-forced
//             on validation documents (what a node's per-model setting is picked by); written to --calibration;
//  sweep:     per criterion and threshold, on test documents: layers skipped, top-1 agreement with full depth
//             (teacher-forced, with the exits' real K/V propagation), perplexity; free-running greedy agreement on held-out
//             prompts at the calibrated thresholds; a PNG of agreement vs layers saved;
//  layerwise: per criterion, one threshold per layer calibrated on validation with the engine's real exits (coordinate
//             ascent from the calibrated global threshold), measured on test;
//  plot:      the PNG from earlier runs' JSON (--from a.json,b.json --png PATH);
//  --propagation calm,exact: how the skipped blocks' K/V are filled: CALM's state propagation (the engine's mode), or
//             exactly (the exit decides only the token's prediction; its skipped blocks still run from the exit hidden
//             state afterwards, as deferred completion would: an upper bound on what an exact cache gives);
//  speed:     wall time at batch 1 and 8, early exit at the calibrated thresholds vs full depth on the ordinary path,
//             alternating A/B; self-speculative decoding vs plain greedy at batch 1 (identical output);
//  cost:      the decision's own time per token as a fraction of a layer, demo and a gpt2-small-shaped fixture (random
//             weights: their exits mean nothing, only the cost does).
// usage: EarlyExitBench [--only calibrate,sweep,layerwise,speed,cost] [--criteria probe,cosine,update_view,margin] [--docs 120] [--doc-tokens 96] [--prompts 50] [--tokens 48]
//                       [--batches 1,8] [--reps 5] [--forced gpt2-small|""] [--threads N] [--probe DIR] [--target 0.95] [--md docs/benchmarks.md]
//                       [--png docs/early-exit.png] [--calibration bench/results/exit-calibration.json] [--propagation calm,exact] [--token-docs DIR] [--grid t1,t2,…]
var opts = BenchArgs.Parse(args);
var inv = CultureInfo.InvariantCulture;
var threads = opts.Int("threads", Environment.ProcessorCount);
OrtRuntime.EnsureInitialized(threads);
var only = opts.List("only", "calibrate,sweep,speed,cost");
var repo = BenchMachine.Repo();
var demo = Path.Combine(repo, "models", "demo");
var probeDir = opts.Str("probe", Path.Combine(demo, "exit-probe"));
var target = opts.Double("target", 0.95);
var command = "dotnet run -c Release --project bench/EarlyExitBench -- " + string.Join(' ', args);
var md = new StringBuilder();
md.AppendLine(inv, $"### FFN early exit ({DateTime.UtcNow:yyyy-MM-dd}): `{command}`");
var source = opts.Str("token-docs", "") is { Length: > 0 } td ? $"given as token ids (`{td}`" : "from `models/demo/eval` (`<|endoftext|>` + text";
md.AppendLine(inv, $"Machine: {BenchMachine.Cpu()}, {threads} threads, ONNX Runtime CPU. Demo model (6 layers), its exit probe (`{Path.GetRelativePath(repo, probeDir)}`), documents {source}, at most {opts.Int("doc-tokens", 96)} tokens).");
Console.WriteLine(md.ToString());
var json = new JsonObject { ["command"] = command, ["machine"] = BenchMachine.Cpu(), ["threads"] = threads };

using var packed = DecoderModel.Load(demo, new RuntimeOptions { MaxBatch = 32, MaxContext = 256, Threads = threads, PackedSteps = true });
using var plain = DecoderModel.Load(demo, new RuntimeOptions { MaxBatch = 32, MaxContext = 256, Threads = threads });
var tokenizer = TokenizerLoader.Load(demo, packed.Config.VocabSize);
var probe = new ProbeCriterion(ExitProbeReader.ReadFolder(probeDir, packed.Config), packed);
var criteria = new (string Name, IExitCriterion Criterion, double[] Grid)[]
{
    ("probe", probe, [0.5, 0.6, 0.7, 0.8, 0.85, 0.86, 0.87, 0.88, 0.89, 0.9, 0.91, 0.92, 0.93, 0.94, 0.95, 0.98]),
    ("cosine", CosineCriterion.Instance, [0.90, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999]),
    ("update_view", UpdateViewCriterion.For(packed), [0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0]),
    ("margin", new MarginCriterion(packed), [0.1, 0.2, 0.3, 0.5, 0.7, 0.9]),
};
var onlyCriteria = opts.List("criteria", "probe,cosine,update_view,margin");
criteria = criteria.Where(c => onlyCriteria.Contains(c.Name)).ToArray();
if (opts.Str("grid", "") is { Length: > 0 } gridArg) // --grid t1,t2,…: the thresholds every chosen criterion is swept at
{
    var grid = gridArg.Split(',').Select(x => double.Parse(x, inv)).ToArray();
    criteria = criteria.Select(c => (c.Name, c.Criterion, grid)).ToArray();
}
// --token-docs DIR: documents given as token ids instead (DIR/windows.{split}.jsonl, one JSON array a line; e.g. the
// forge's stream windows, tools/forge/exit_eval.py --dump-windows).
var tokenDocs = opts.Str("token-docs", "");
List<int[]> Docs(string split) => (tokenDocs.Length > 0
        ? File.ReadLines(Path.Combine(tokenDocs, $"windows.{split}.jsonl")).Take(opts.Int("docs", 120)).Select(l => JsonSerializer.Deserialize<int[]>(l)!)
        : File.ReadLines(Path.Combine(demo, "eval", $"general.{split}.jsonl")).Take(opts.Int("docs", 120))
            .Select(l => tokenizer.Encode("<|endoftext|>" + JsonNode.Parse(l)!["text"]!.GetValue<string>())))
    .Select(ids => ids.Length > opts.Int("doc-tokens", 96) ? ids[..opts.Int("doc-tokens", 96)] : ids)
    .Where(ids => ids.Length >= 4).ToList();
var calibrationPath = opts.Str("calibration", Path.Combine("bench", "results", "exit-calibration.json"));
var calibrated = File.Exists(calibrationPath)
    ? JsonNode.Parse(File.ReadAllText(calibrationPath))!.AsObject().ToDictionary(kv => kv.Key, kv => kv.Value!.GetValue<double>())
    : [];

// How the skipped blocks' K/V are filled: calm (state propagation from the exit hidden state) or exact (the exit
// decides only the token's prediction; the skipped blocks still run for the cache, as deferred completion does).
var propagations = opts.List("propagation", "calm");
static string Key(string name, string propagation) => propagation == "calm" ? name : $"{name}/{propagation}";

if (only.Contains("calibrate"))
{
    var val = Docs("val");
    var full = FullLogits(plain, val);
    md.AppendLine(inv, $"\nCalibration (validation, {val.Count} documents, {val.Sum(d => d.Length - 1)} predicted tokens): the threshold with the most layers skipped at ≥ {target:P0} teacher-forced top-1 agreement:\n");
    md.AppendLine("| criterion | skipped layers' K/V | threshold | layers skipped | agreement | perplexity (full: " + Math.Exp(full.Nll).ToString("F1", inv) + ") |");
    md.AppendLine("|---|---|---|---|---|---|");
    foreach (var propagation in propagations)
    {
        foreach (var (name, criterion, grid) in criteria)
        {
            var best = (Threshold: double.NaN, Skipped: 0.0, Agreement: 0.0, Ppl: 0.0);
            foreach (var t in grid)
            {
                var r = TeacherForced(packed, val, full, new ExitPolicy(criterion, (float)t), propagation == "exact");
                if (r.Agreement >= target && r.Skipped > best.Skipped) best = (t, r.Skipped, r.Agreement, Math.Exp(r.Nll));
            }
            if (double.IsNaN(best.Threshold)) best.Threshold = grid[^1];
            calibrated[Key(name, propagation)] = best.Threshold;
            md.AppendLine(string.Create(inv, $"| {name} | {propagation} | {best.Threshold} | {best.Skipped:P1} | {best.Agreement:P1} | {best.Ppl:F1} |"));
            Console.WriteLine($"calibrated {name} ({propagation}): {best}");
        }
    }
    Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(calibrationPath))!);
    File.WriteAllText(calibrationPath, new JsonObject(calibrated.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
}

if (only.Contains("sweep"))
{
    var test = Docs("test");
    var full = FullLogits(plain, test);
    var fullPpl = Math.Exp(full.Nll);
    md.AppendLine(inv, $"\nSweep (test, {test.Count} documents, {test.Sum(d => d.Length - 1)} predicted tokens; teacher-forced, skipped layers' K/V by {string.Join(" / ", propagations)}; full-depth perplexity {fullPpl:F1}). Anchor: Geva et al. skip 21% of layers at 94.9% agreement (16-layer LM):\n");
    md.AppendLine("| criterion | skipped layers' K/V | threshold | layers skipped | top-1 agreement | perplexity (Δ) |");
    md.AppendLine("|---|---|---|---|---|---|");
    var points = new JsonArray();
    var plot = new List<(string Name, double Skipped, double Agreement)>();
    foreach (var (name, criterion, grid) in criteria)
    {
        foreach (var propagation in propagations)
        {
            foreach (var t in grid)
            {
                var r = TeacherForced(packed, test, full, new ExitPolicy(criterion, (float)t), propagation == "exact");
                var ppl = Math.Exp(r.Nll);
                var delta = (ppl / fullPpl - 1).ToString("+0.0%;-0.0%", inv);
                md.AppendLine(string.Create(inv, $"| {name} | {propagation} | {t} | {r.Skipped:P1} | {r.Agreement:P1} | {ppl:F1} ({delta}) |"));
                Console.WriteLine(string.Create(inv, $"{name} {propagation} {t}: skipped {r.Skipped:P1} agreement {r.Agreement:P1} ppl {ppl:F1} ({delta})"));
                points.Add(new JsonObject { ["criterion"] = name, ["propagation"] = propagation, ["threshold"] = t, ["skipped"] = r.Skipped, ["agreement"] = r.Agreement, ["perplexity"] = ppl });
                plot.Add((Key(name, propagation), r.Skipped, r.Agreement));
            }
        }
    }
    json["sweep"] = points;
    if (opts.Str("png", "") is { Length: > 0 } png) Plot.AgreementVsSkipped(plot, png);

    var prompts = Prompts(demo, tokenizer, opts.Int("prompts", 50));
    md.AppendLine(inv, $"\nFree-running greedy ({prompts.Count} held-out chat prompts, {opts.Int("tokens", 48)} new tokens) at the calibrated thresholds: share of positions whose token equals full-depth greedy's, layers skipped:\n");
    md.AppendLine("| criterion | skipped layers' K/V | threshold | token agreement | layers skipped |");
    md.AppendLine("|---|---|---|---|---|");
    foreach (var propagation in propagations)
    {
        foreach (var (name, criterion, grid) in criteria)
        {
            if (!calibrated.TryGetValue(Key(name, propagation), out var t)) continue;
            var (agree, skipped) = FreeRunning(packed, plain, prompts, opts.Int("tokens", 48), new ExitPolicy(criterion, (float)t), propagation == "exact");
            md.AppendLine(string.Create(inv, $"| {name} | {propagation} | {t} | {agree:P1} | {skipped:P1} |"));
        }
    }
}

if (only.Contains("plot"))
{
    // The PNG from the "sweep" arrays of earlier runs' JSON files (--from a.json,b.json), without measuring again.
    var plot = new List<(string Name, double Skipped, double Agreement)>();
    foreach (var file in opts.List("from", ""))
    {
        foreach (var p in JsonNode.Parse(File.ReadAllText(file))!["sweep"]!.AsArray())
        {
            var propagation = p!["propagation"]?.GetValue<string>() ?? "calm";
            plot.Add((Key(p["criterion"]!.GetValue<string>(), propagation), p["skipped"]!.GetValue<double>(), p["agreement"]!.GetValue<double>()));
        }
    }
    Plot.AgreementVsSkipped(plot, opts.Str("png", Path.Combine("docs", "early-exit.png")));
}

if (only.Contains("layerwise"))
{
    // One threshold per layer instead of one for all, calibrated with the engine's real exits (coordinate ascent on
    // validation: each move lowers or raises one layer's threshold and is kept when more layers are skipped at ≥ the
    // target agreement), starting from the calibrated global threshold; then measured on test.
    var val = Docs("val");
    var test = Docs("test");
    var fullVal = FullLogits(plain, val);
    var fullTest = FullLogits(plain, test);
    var layers = packed.Config.NumLayers;
    md.AppendLine(inv, $"\nPer-layer thresholds (calibrated on validation with real exits, {val.Count} documents; test {test.Count} documents; full-depth test perplexity {Math.Exp(fullTest.Nll):F1}):\n");
    md.AppendLine("| criterion | skipped layers' K/V | thresholds (layers 1..L−1) | validation skipped / agreement | test skipped / agreement | test perplexity |");
    md.AppendLine("|---|---|---|---|---|---|");
    foreach (var propagation in propagations)
    {
        foreach (var (name, criterion, _) in criteria)
        {
            if (!calibrated.TryGetValue(Key(name, propagation), out var start)) continue;
            var taus = Enumerable.Repeat((float)start, layers - 1).ToArray();
            (double Skipped, double Agreement, double Nll) Eval(float[] t, List<int[]> docs, (List<float[]> Logits, double Nll) full) =>
                TeacherForced(packed, docs, full, new ExitPolicy(new LayerwiseCriterion(criterion, (float[])t.Clone()), 0.5f), propagation == "exact");
            var best = Eval(taus, val, fullVal);
            foreach (var step in new[] { 0.04f, 0.02f, 0.01f })
            {
                for (var improved = true; improved;)
                {
                    improved = false;
                    for (var l = 0; l < layers - 1; l++)
                    {
                        foreach (var delta in new[] { -step, step })
                        {
                            var trial = (float[])taus.Clone();
                            trial[l] = Math.Clamp(trial[l] + delta, 0.3f, 0.9999f);
                            var r = Eval(trial, val, fullVal);
                            if (r.Agreement < target || r.Skipped <= best.Skipped + 1e-6) continue;
                            (taus, best, improved) = (trial, r, true);
                            Console.WriteLine(string.Create(inv, $"layerwise {name} {propagation}: [{string.Join(", ", taus)}] {r.Skipped:P1} at {r.Agreement:P1}"));
                        }
                    }
                }
            }
            var onTest = Eval(taus, test, fullTest);
            md.AppendLine(string.Create(inv, $"| {name} | {propagation} | {string.Join(", ", taus.Select(x => x.ToString("0.###", inv)))} | {best.Skipped:P1} / {best.Agreement:P1} | {onTest.Skipped:P1} / {onTest.Agreement:P1} | {Math.Exp(onTest.Nll):F1} |"));
        }
    }
}

if (only.Contains("speed"))
{
    var reps = opts.Int("reps", 5);
    // Untimed repetitions first: the runtime's tiered JIT promotes the decode path's managed code (exit criteria, the
    // packed step) only after many calls, and the first configuration measured would otherwise pay for it.
    var warmup = opts.Int("warmup", 3);
    var steps = opts.Int("tokens", 48);
    md.AppendLine(inv, $"\nWall time, {steps} decode steps per run after a prompt of 16, early exit (packed steps) vs full depth (ordinary path), medians of {reps} alternating repetitions:\n");
    md.AppendLine("| criterion (threshold) | batch | full depth tok/s | early exit tok/s | speed-up (min–max) | layers skipped |");
    md.AppendLine("|---|---|---|---|---|---|");
    foreach (var (name, criterion, _) in criteria)
    {
        if (!calibrated.TryGetValue(name, out var t)) continue;
        foreach (var b in opts.Ints("batches", "1,8"))
        {
            var full = new List<double>();
            var exit = new List<double>();
            double skipped = 0;
            // One decoder per side for all repetitions, as a node keeps its decoder: the warm-up run builds the
            // bindings of every step shape (packed steps bind per token count), which the timed runs then reuse.
            using var plainDecoder = new BatchDecoder(plain, b);
            using var exitDecoder = new BatchDecoder(packed, b);
            // Two seconds of both before anything is timed (JIT tiers, the thread pool, first touches of the weights).
            var warm = Stopwatch.GetTimestamp();
            while (Stopwatch.GetElapsedTime(warm).TotalSeconds < 2)
            {
                GreedyRun(plainDecoder, b, steps, null, out _);
                GreedyRun(exitDecoder, b, steps, new ExitPolicy(criterion, (float)t), out _);
            }
            for (var r = -warmup; r < reps; r++)
            {
                var a = GreedyRun(plainDecoder, b, steps, null, out _);
                var e = GreedyRun(exitDecoder, b, steps, new ExitPolicy(criterion, (float)t), out var s);
                if (r < 0) continue;
                full.Add(a);
                exit.Add(e);
                skipped = s;
            }
            md.AppendLine(string.Create(inv, $"| {name} ({t}) | {b} | {b * steps / BenchStats.Median(full):F0} | {b * steps / BenchStats.Median(exit):F0} | {BenchStats.Ratio(full, exit)} | {skipped:P1} |"));
        }
    }
    // The mechanism at a realistic layer size: a gpt2-small-shaped fixture (random weights never exit by a real
    // criterion), every token forced out after k of 12 blocks (FixedDepthCriterion, K/V propagated), against full depth
    // on the ordinary path; and the packed path at full depth (what a node with EarlyExit pays for rows that never exit).
    if (opts.Str("forced", "gpt2-small") is { Length: > 0 })
    {
        var gpt2Dir = Path.Combine(repo, ".fixtures", "gpt2-small");
        if (!File.Exists(Path.Combine(gpt2Dir, "model.safetensors"))) FixtureCheckpoint.Write(gpt2Dir, FixtureShape.Gpt2Small);
        using var gPacked = DecoderModel.Load(gpt2Dir, new RuntimeOptions { MaxBatch = 8, MaxContext = 128, Threads = threads, PackedSteps = true });
        using var gPlain = DecoderModel.Load(gpt2Dir, new RuntimeOptions { MaxBatch = 8, MaxContext = 128, Threads = threads });
        var gSteps = Math.Min(steps, 32);
        foreach (var k in new int?[] { null, 8, 6 })
        {
            foreach (var b in opts.Ints("batches", "1,8"))
            {
                var full = new List<double>();
                var exit = new List<double>();
                double skipped = 0;
                using var plainDecoder = new BatchDecoder(gPlain, b);
                using var exitDecoder = new BatchDecoder(gPacked, b);
                for (var r = -warmup; r < reps; r++)
                {
                    var a = GreedyRun(plainDecoder, b, gSteps, null, out _);
                    var e = GreedyRun(exitDecoder, b, gSteps, k is int layer ? new ExitPolicy(new FixedDepthCriterion(layer), 0.5f) : null, out var sk);
                    if (r < 0) continue;
                    full.Add(a);
                    exit.Add(e);
                    skipped = sk;
                }
                var label = k is int kk ? $"gpt2-small fixture, forced exit after {kk} of 12" : "gpt2-small fixture, packed path, no exit";
                md.AppendLine(string.Create(inv, $"| {label} | {b} | {b * gSteps / BenchStats.Median(full):F0} | {b * gSteps / BenchStats.Median(exit):F0} | {BenchStats.Ratio(full, exit)} | {skipped:P1} |"));
            }
        }
    }
    // Self-speculative decoding at batch 1, through the scheduler (it is a decoding strategy), identical output.
    var prompts = Prompts(demo, tokenizer, 8);
    foreach (var (e, d) in new[] { (2, 4), (3, 4), (3, 6) })
    {
        var plainTimes = new List<double>();
        var specTimes = new List<double>();
        var identical = true;
        using var plainDecoder = new BatchDecoder(packed, 1);
        using var plainScheduler = new GenerationScheduler(plainDecoder, tokenizer);
        using var specDecoder = new BatchDecoder(packed, 1);
        using var specScheduler = new GenerationScheduler(specDecoder, tokenizer);
        plainScheduler.Start();
        specScheduler.Start();
        for (var r = -warmup; r < reps; r++)
        {
            var (tp, outP) = SchedulerRun(plainScheduler, prompts, steps, SamplingSpec.Instance);
            var (ts, outS) = SchedulerRun(specScheduler, prompts, steps, new SpeculativeSpec(e, d));
            identical &= outP.SequenceEqual(outS);
            if (r < 0) continue;
            plainTimes.Add(tp);
            specTimes.Add(ts);
        }
        md.AppendLine(string.Create(inv, $"| speculative E {e}, d {d} (identical output: {(identical ? "yes" : "NO")}) | 1 | {prompts.Count * steps / BenchStats.Median(plainTimes):F0} | {prompts.Count * steps / BenchStats.Median(specTimes):F0} | {BenchStats.Ratio(plainTimes, specTimes)} | — |"));
    }
}

if (only.Contains("cost"))
{
    md.AppendLine("\nCost of the decision per token and layer, as a fraction of one block at batch 8 (the block timed as a decode step / layers):\n");
    md.AppendLine("| model | criterion | decision (µs per token and layer) | one block (µs per token) | fraction |");
    md.AppendLine("|---|---|---|---|---|");
    Cost("demo", packed, criteria.Select(c => (c.Name, c.Criterion)).ToArray(), md);
    var gpt2 = Path.Combine(repo, ".fixtures", "gpt2-small");
    if (!File.Exists(Path.Combine(gpt2, "model.safetensors"))) FixtureCheckpoint.Write(gpt2, FixtureShape.Gpt2Small);
    using var g = DecoderModel.Load(gpt2, new RuntimeOptions { MaxBatch = 8, MaxContext = 128, Threads = threads, PackedSteps = true });
    Cost("gpt2-small (random)", g, [("probe", new ProbeCriterion(RandomProbe(g.Config), g)), ("cosine", CosineCriterion.Instance), ("update_view", UpdateViewCriterion.For(g))], md);
}

var jsonPath = opts.Str("json", Path.Combine("bench", "results", "early-exit.json"));
Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(jsonPath))!);
File.WriteAllText(jsonPath, json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
Console.WriteLine(md.ToString());
if (opts.Str("md", "") is { Length: > 0 } mdPath) BenchMachine.AppendMarkdown(mdPath, md.ToString());
return 0;

// ---------------------------------------------------------------------------------------------------------------------

static (List<float[]> Logits, double Nll) FullLogits(DecoderModel model, List<int[]> docs)
{
    var v = model.Config.VocabSize;
    var all = new List<float[]>();
    double nll = 0;
    long count = 0;
    using var dec = new BatchDecoder(model, 1);
    foreach (var doc in docs)
    {
        var logits = new float[doc.Length * v];
        var seq = dec.TryAllocate()!;
        dec.Prefill(seq, doc, allLogits: logits);
        dec.Release(seq);
        all.Add(logits);
        // The positions exit-mode runs score: predictions made after feeding token 1 onwards (token 0 is prefilled).
        for (var i = 1; i + 1 < doc.Length; i++)
        {
            nll += Nll(logits.AsSpan(i * v, v), doc[i + 1]);
            count++;
        }
    }
    return (all, nll / count);
}

static double Nll(ReadOnlySpan<float> logits, int target)
{
    var max = TensorPrimitives.Max(logits);
    double z = 0;
    foreach (var x in logits) z += Math.Exp(x - max);
    return -(logits[target] - max - Math.Log(z));
}

/// <summary>Documents fed token by token through exit-mode decode steps (32 rows at a time); each prediction against full depth.</summary>
static (double Skipped, double Agreement, double Nll) TeacherForced(DecoderModel model, List<int[]> docs, (List<float[]> Logits, double Nll) full, ExitPolicy policy, bool exact = false)
{
    // exact: the exit decides only the token's prediction; its skipped blocks still run from its exit hidden state
    // (BatchDecoder.Verify, after the step), so every later token attends to the full model's K/V.
    if (exact) policy = policy with { Propagate = false };
    var hidden = new float[model.Config.HiddenSize];
    var v = model.Config.VocabSize;
    var layers = model.Config.NumLayers;
    long tokens = 0, agree = 0, layersRun = 0, steps = 0;
    double nll = 0;
    using var dec = new BatchDecoder(model, 32);
    for (var start = 0; start < docs.Count; start += 32)
    {
        var batch = Enumerable.Range(start, Math.Min(32, docs.Count - start)).ToList();
        var rows = batch.Select(i =>
        {
            var seq = dec.TryAllocate()!;
            dec.Prefill(seq, docs[i].AsSpan(0, 1));
            dec.SetExitPolicy(seq, policy);
            return (Doc: i, Seq: seq);
        }).ToList();
        for (var pos = 1; rows.Count > 0; pos++)
        {
            foreach (var (doc, seq) in rows) seq.PendingToken = docs[doc][pos];
            var logits = dec.Decode();
            foreach (var (doc, seq) in rows)
            {
                var step = logits.Slice(seq.Slot * v, v);
                layersRun += seq.LastLayers;
                steps++;
                if (pos + 1 < docs[doc].Length)
                {
                    var fullRow = full.Logits[doc].AsSpan(pos * v, v);
                    if (TensorPrimitives.IndexOfMax(step) == TensorPrimitives.IndexOfMax(fullRow)) agree++;
                    nll += Nll(step, docs[doc][pos + 1]);
                    tokens++;
                }
            }
            if (exact) foreach (var (_, seq) in rows) Complete(dec, seq, hidden);
            foreach (var row in rows.Where(r => pos + 1 >= docs[r.Doc].Length).ToList())
            {
                dec.Release(row.Seq);
                rows.Remove(row);
            }
        }
    }
    return (1 - (double)layersRun / steps / layers, (double)agree / tokens, nll / tokens);
}

/// <summary>Runs the blocks <paramref name="seq"/>'s last token skipped from its exit hidden state, writing their exact K/V.</summary>
static void Complete(BatchDecoder dec, Sequence seq, float[] hidden)
{
    if (seq.LastLayers >= dec.Model.Config.NumLayers) return;
    dec.CopyLastHidden(seq, hidden);
    dec.Verify(seq, hidden, seq.LastLayers, 1);
}

static List<int[]> Prompts(string demo, ITokenizer tokenizer, int count)
{
    var template = ChatTemplate.FromCheckpoint(demo, out _);
    return File.ReadLines(Path.Combine(demo, "eval", "prompts.test.jsonl")).Take(count)
        .Select(l => JsonNode.Parse(l)!["messages"]![0]!["content"]!.GetValue<string>())
        .Select(u => tokenizer.Encode(template.Render([new ChatMessage("user", u)], true, "<|endoftext|>", "<|endoftext|>"))).ToList();
}

/// <summary>Greedy continuations with exits vs full depth (ordinary path): position-wise token agreement and layers skipped.</summary>
static (double Agreement, double Skipped) FreeRunning(DecoderModel packed, DecoderModel plain, List<int[]> prompts, int tokens, ExitPolicy policy, bool exact = false)
{
    long same = 0, total = 0, layersRun = 0, steps = 0;
    foreach (var prompt in prompts)
    {
        var a = Greedy(plain, prompt, tokens, null, out _);
        var b = Greedy(packed, prompt, tokens, exact ? policy with { Propagate = false } : policy, out var layers, exact);
        for (var i = 0; i < tokens; i++) same += a[i] == b[i] ? 1 : 0;
        total += tokens;
        layersRun += layers;
        steps += tokens - 1;
    }
    return ((double)same / total, 1 - (double)layersRun / steps / packed.Config.NumLayers);
}

static int[] Greedy(DecoderModel model, int[] prompt, int tokens, ExitPolicy? policy, out long layersRun, bool exact = false)
{
    var hidden = new float[model.Config.HiddenSize];
    using var dec = new BatchDecoder(model, 1);
    var seq = dec.TryAllocate()!;
    var output = new int[tokens];
    output[0] = TensorPrimitives.IndexOfMax(dec.Prefill(seq, prompt));
    if (policy is not null) dec.SetExitPolicy(seq, policy);
    layersRun = 0;
    for (var i = 1; i < tokens; i++)
    {
        seq.PendingToken = output[i - 1];
        output[i] = TensorPrimitives.IndexOfMax(dec.Decode());
        layersRun += seq.LastLayers;
        if (exact) Complete(dec, seq, hidden);
    }
    return output;
}

/// <summary>Seconds for <paramref name="steps"/> greedy decode steps of <paramref name="b"/> rows of <paramref name="dec"/> (prompts of 16 real-text tokens prefilled first, not timed; released after).</summary>
static double GreedyRun(BatchDecoder dec, int b, int steps, ExitPolicy? policy, out double skipped)
{
    var model = dec.Model;
    var v = model.Config.VocabSize;
    var seqs = new Sequence[b];
    var next = new int[b];
    for (var i = 0; i < b; i++)
    {
        seqs[i] = dec.TryAllocate()!;
        var logits = dec.Prefill(seqs[i], Enumerable.Range(0, 16).Select(j => 262 + (i * 37 + j * 11) % 500).ToArray());
        next[i] = TensorPrimitives.IndexOfMax(logits);
        if (policy is not null) dec.SetExitPolicy(seqs[i], policy);
    }
    long layers = 0;
    var started = Stopwatch.GetTimestamp();
    for (var s = 0; s < steps; s++)
    {
        for (var i = 0; i < b; i++) seqs[i].PendingToken = next[i];
        var logits = dec.Decode();
        for (var i = 0; i < b; i++)
        {
            next[i] = TensorPrimitives.IndexOfMax(logits.Slice(i * v, v));
            layers += seqs[i].LastLayers;
        }
    }
    var seconds = BenchMachine.Seconds(started);
    foreach (var seq in seqs) dec.Release(seq);
    skipped = 1 - (double)layers / (b * steps) / model.Config.NumLayers;
    return seconds;
}

/// <summary>Seconds to generate <paramref name="tokens"/> greedy tokens for each prompt one request at a time, and the tokens.</summary>
static (double Seconds, List<int> Tokens) SchedulerRun(GenerationScheduler scheduler, List<int[]> prompts, int tokens, DecodingSpec spec)
{
    var output = new List<int>();
    var started = Stopwatch.GetTimestamp();
    foreach (var prompt in prompts)
    {
        var request = new GenerationRequest
        {
            PromptTokens = prompt,
            Sampling = new SamplingParameters { Temperature = 0f, MaxTokens = tokens, IgnoreEos = true },
            Logprobs = true,
            Decoding = spec,
        };
        if (scheduler.Submit(request, out var h) != SubmitStatus.Accepted) throw new InvalidOperationException("not accepted");
        var events = Task.Run(async () => { var l = new List<GenerationEvent>(); await foreach (var e in h!.Events.ReadAllAsync()) l.Add(e); return l; }).GetAwaiter().GetResult();
        output.AddRange(events.Where(e => e.Kind == GenerationEventKind.Token && e.TokenId >= 0).Select(e => e.TokenId));
    }
    return (BenchMachine.Seconds(started), output);
}

static void Cost(string name, DecoderModel model, (string Name, IExitCriterion Criterion)[] criteria, StringBuilder md)
{
    var inv = CultureInfo.InvariantCulture;
    var c = model.Config;
    const int b = 8, steps = 16;
    var blockSeconds = new List<double>();
    using (var dec = new BatchDecoder(model, b))
    {
        for (var r = -1; r < 4; r++)
        {
            var seconds = GreedyRun(dec, b, steps, null, out _);
            if (r >= 0) blockSeconds.Add(seconds);
        }
    }
    var perBlock = BenchStats.Median(blockSeconds) / steps / b / c.NumLayers;
    var rng = new Random(5);
    float[] Rand(int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
    var hidden = Rand(c.HiddenSize);
    var previous = Rand(c.HiddenSize);
    var ffn = Rand(c.IntermediateSize);
    foreach (var (criterionName, criterion) in criteria)
    {
        var scratch = new float[criterion.ScratchSize];
        var state = new int[criterion.StateSize];
        const int calls = 400;
        var best = double.MaxValue;
        for (var rep = 0; rep < 5; rep++)
        {
            var started = Stopwatch.GetTimestamp();
            for (var i = 0; i < calls; i++)
            {
                Array.Clear(state);
                var view = new ExitView { Layer = 1 + i % (c.NumLayers - 1), Hidden = hidden, Previous = previous, Ffn = ffn, State = state, Scratch = scratch };
                criterion.Confidence(ref view);
            }
            best = Math.Min(best, BenchMachine.Seconds(started) / calls);
        }
        md.AppendLine(string.Create(inv, $"| {name} | {criterionName} | {best * 1e6:F1} | {perBlock * 1e6:F1} | {best / perBlock:P1} |"));
    }
}

static ExitProbeDefinition RandomProbe(ModelConfig c)
{
    var rng = new Random(9);
    float[] Rand(int n) => Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() - 0.5) * 0.1)).ToArray();
    var probes = new Dictionary<int, IReadOnlyList<DenseLayer>>();
    for (var l = 1; l < c.NumLayers; l++) probes[l] = [new DenseLayer(c.HiddenSize, 32, Rand(32 * c.HiddenSize), Rand(32)), new DenseLayer(32, 1, Rand(32), Rand(1))];
    return new ExitProbeDefinition { FinalNorm = false, Activation = RewardActivation.Tanh, Probes = probes };
}

/// <summary>Exits after layer l when the inner criterion's confidence reaches that layer's own threshold (policy threshold 0.5).</summary>
sealed class LayerwiseCriterion(IExitCriterion inner, float[] thresholds) : IExitCriterion
{
    public ExitCriterionKind Kind => inner.Kind;
    public int ScratchSize => inner.ScratchSize;
    public int StateSize => inner.StateSize;
    public float Confidence(ref ExitView view) => view.Layer <= thresholds.Length && inner.Confidence(ref view) >= thresholds[view.Layer - 1] ? 1f : 0f;
}
