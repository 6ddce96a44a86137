// Adapter slots benchmark (issue #7), in process: the real GenerationScheduler and BatchDecoder, closed-loop clients.
//  1. one adapter vs base only at batch 1, 8, 32;
//  2. N distinct adapters (power law α = 1 and uniform) vs base only at concurrency 32, with the adapter bytes each
//     step reads;
//  3. heterogeneous batching (S slots) vs one adapter per batch (a single slot, so the scheduler runs one adapter's
//     requests at a time): "switch" pays only a slot write per change; "swap-and-merge" also pays the real arithmetic
//     of unmerging and merging the adapters into (a copy of) the base weights on every change;
//  4. cold activation store → slot (embedded Garnet: read + verify + decode + materialise + convert + slot write).
// Base and adapter runs alternate within each repetition (BENCHMARKS.md). The load is the load generator's library
// (tools/LoadGen.Core: fixed-length trace, power-law/uniform adapter popularity, closed-loop runner, metrics) with an
// in-process sender that submits to the scheduler instead of HTTP: the node's HTTP cost would be added to both sides
// equally and blur the ratio this measures (the node benchmark measures HTTP).
// usage: AdapterBench [--shape gpt2-small] [--spin true] [--rank 16] [--batches 1,8,32] [--ns 1,8,32,128,512] [--tokens 32]
//                     [--prompt 16] [--requests 3] [--reps 3] [--threads 2] [--slots 32] [--cold-reps 30] [--mixed false] [--consume true] [--fp16] [--cuda] [--only k,p,e,a,b,c,d]
// (k: the operator alone in one-node sessions; e: engine-only step diagnostic, alternating single decode steps; p: the same with the operator's per-phase timer
// and the process CPU time per step (use --spin false); neither is part of the default run)
using System.Diagnostics;
using System.Globalization;
using System.Text;
using Serving.AdapterStore;
using Serving.AdapterStore.Compression;
using Serving.AdapterStore.Ingest;
using Serving.AdapterStore.Peft;
using Serving.AdapterStore.Storage;
using Serving.Checkpoints;
using Serving.Fixtures;
using Serving.Inference.Adapters;
using Serving.Inference.Engine;
using Serving.Inference.Runtime;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;
using Serving.Inference.Tokenization;
using Serving.LoadGen.Client;
using Serving.LoadGen.Metrics;
using Serving.LoadGen.Workload;
using Serving.Bench;
using StackExchange.Redis;

CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
var opt = args.Select((a, i) => (a, i)).Where(x => x.a.StartsWith("--", StringComparison.Ordinal))
    .ToDictionary(x => x.a[2..], x => x.i + 1 < args.Length && !args[x.i + 1].StartsWith("--", StringComparison.Ordinal) ? args[x.i + 1] : "true");
string Str(string k, string d) => opt.TryGetValue(k, out var v) ? v : d;
int Int(string k, int d) => int.Parse(Str(k, d.ToString()));
var shapeName = Str("shape", "gpt2-small");
int rank = Int("rank", 16), tokens = Int("tokens", 32), prompt = Int("prompt", 16), perClient = Int("requests", 3), reps = Int("reps", 3);
int threads = Int("threads", Environment.ProcessorCount), slots = Int("slots", 32), coldReps = Int("cold-reps", 30);
var batches = Str("batches", "1,8,32").Split(',').Select(int.Parse).ToArray();
var ns = Str("ns", "1,8,32,128,512").Split(',').Select(int.Parse).ToArray();
var only = Str("only", "a,b,c,d").Split(',');
var kernel = Enum.Parse<AdapterKernelKind>(Str("kernel", "Auto"), ignoreCase: true);

// --spin false: idle pool threads sleep instead of spinning, so process CPU time counts work only (the CPU-time clock
// of --only p, robust to other processes on a loaded machine).
var spin = Str("spin", "true") == "true";
// --mixed true: every scheduler runs mixed steps (prompt chunks of several requests ride in the decode step, the node's
// Node:MixedSteps); the model is loaded with packed steps for it. Off: prompts are prefilled one request at a time.
var mixed = Str("mixed", "false") == "true";
// --consume false: cold activation copies B into new engine-oriented arrays (the node's path before it handed the
// decoded arrays over with FromLora(consume: true)); the baseline of that change.
var consume = Str("consume", "true") == "true";
// --fp16: fp16 blocks and head (the CUDA node's arithmetic; Auto then picks the BatchedMatMul adapter kernel); --cuda:
// the CUDA provider (a -p:UseCuda=true build; bench/gpu/run.sh). On the CPU provider --fp16 checks the path only: ONNX
// Runtime casts around its fp32-only kernels, so it is slower than fp32 there.
var fp16 = Str("fp16", "false") == "true";
var cuda = Str("cuda", "false") == "true";
if (mixed && (fp16 || cuda)) throw new ArgumentException("--mixed runs the packed fp32 CPU operators: not with --fp16 or --cuda");
OrtRuntime.EnsureInitialized(threads, spin);
var dir = Path.GetFullPath(Path.Combine(".fixtures", shapeName));
if (!File.Exists(Path.Combine(dir, "model.safetensors")))
{
    Console.WriteLine($"writing random {shapeName} checkpoint to {dir}");
    FixtureCheckpoint.Write(dir, FixtureShape.Named(shapeName));
}
var concurrencyMax = Math.Max(batches.Max(), 32);
using var model = DecoderModel.Load(dir, new RuntimeOptions
{
    MaxBatch = concurrencyMax, MaxContext = prompt + tokens + 8, Threads = threads, AdapterSlots = slots, AdapterMaxRank = rank,
    AdapterKernel = kernel, SpinThreads = spin, PackedSteps = mixed, MaxStepTokens = mixed ? new SchedulerOptions().MaxTokensPerStep : 0, // the node's default mixed-step budget
    Precision = fp16 ? ComputePrecision.Float16 : ComputePrecision.Float32,
    ExecutionProvider = cuda ? ExecutionProviderKind.Cuda : ExecutionProviderKind.Cpu,
});
var c = model.Config;
var tokenizer = TokenizerLoader.Load(dir, c.VocabSize);
Console.WriteLine($"{shapeName}: load {model.LoadTime.TotalSeconds:F1} s (base + {slots}-slot variants), {threads} threads, {Environment.ProcessorCount} cores, adapter kernel {(model.Options.UsesSegmentedAdapters ? "Segmented" : "BatchedMatMul")}, {model.Options.Precision} on {model.Options.ExecutionProvider}, prompts {(mixed ? "in mixed steps" : "prefilled one request at a time")}");

// A small pool of distinct random contents; N adapters reuse them under distinct keys (each still takes its own slot
// and its own copy in slot storage, so device bytes and swaps are real; only host memory is shared).
var pool = Enumerable.Range(0, 4).Select(i => AdapterFactors.FromLora(c, RandomLora(c, rank, seed: 10 + i))).ToArray();
Console.WriteLine($"adapter: rank {rank} on all four projections of every layer = {pool[0].Bytes / 1e6:F2} MB fp32");
// Read bandwidth for the byte floor (adapter bytes per step ÷ bandwidth, added to the base step; issue #19).
var bandwidth = Bandwidth.Read(threads);
Console.WriteLine($"machine: {BenchMachine.Cpu()}; memory read bandwidth {bandwidth / 1e9:F1} GB/s ({threads} threads, best of 5 over 512 MB)");
Console.WriteLine();

if (only.Contains("e"))
{
    // Engine only, step by step: two decoders on the same model, one with every row on adapter groups, alternating
    // single decode steps so machine noise hits both sides alike. A diagnostic for the graph's cost.
    Console.WriteLine("### Engine decode step, base vs adapters (alternating single steps, median of per-pair ratios)");
    Console.WriteLine();
    Console.WriteLine("| batch | distinct adapters | base step ms | adapter step ms | overhead (median, p10–p90) |");
    Console.WriteLine("|---|---|---|---|---|");
    foreach (var b in batches)
    {
        // Row → adapter assignments: all rows on one adapter; every row on its own; and at batch 32 a skewed mix like
        // power-law traffic (group sizes 8, 4, 3, 2, 2, 2 and eleven of 1: 17 adapters, the largest group pads T to 8).
        var layouts = new List<int[]> { new int[b] };
        if (Math.Min(b, slots) > 1) layouts.Add(Enumerable.Range(0, b).Select(r => r % Math.Min(b, slots)).ToArray());
        if (b == 32 && slots >= 17)
        {
            int[] sizes = [8, 4, 3, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1];
            layouts.Add(sizes.SelectMany((n, g) => Enumerable.Repeat(g, n)).ToArray());
        }
        foreach (var layout in layouts)
        {
            var groups = layout.Distinct().Count();
            using var baseDec = new BatchDecoder(model, b);
            using var adDec = new BatchDecoder(model, b);
            // Adapters in the highest slots first, so the first mixed step compacts them (then they stay).
            for (var g = 0; g < groups; g++) adDec.Adapters!.Write(slots - 1 - g, pool[g % pool.Length]);
            var rng = new Random(5);
            foreach (var (dec, adapted) in new[] { (baseDec, false), (adDec, true) })
            {
                for (var r = 0; r < b; r++)
                {
                    var seq = dec.TryAllocate()!;
                    if (adapted) dec.SetAdapter(seq, slots - 1 - layout[r]);
                    var p = new int[prompt];
                    for (var k = 0; k < prompt; k++) p[k] = rng.Next(256);
                    dec.Prefill(seq, p);
                }
            }
            var baseMs = new List<double>();
            var adMs = new List<double>();
            var n = Math.Max(8, tokens);
            for (var i = -2; i < n; i++)
            {
                var t1 = Step(baseDec);
                var t2 = Step(adDec);
                if (i < 0) continue;
                baseMs.Add(t1);
                adMs.Add(t2);
            }
            var ratios = adMs.Zip(baseMs, (x, y) => 100 * (x / y - 1)).Order().ToList();
            var largest = layout.GroupBy(x => x).Max(x => x.Count());
            Console.WriteLine($"| {b} | {groups} (largest {largest}) | {Median(baseMs):F2} | {Median(adMs):F2} | {Median(ratios):F1}% ({ratios[ratios.Count / 10]:F1}–{ratios[ratios.Count * 9 / 10]:F1}) |");
        }
    }
    Console.WriteLine();

    static double Step(BatchDecoder dec)
    {
        foreach (var seq in dec.Active) seq.PendingToken = 7;
        var sw = Stopwatch.StartNew();
        dec.Decode();
        return sw.Elapsed.TotalMilliseconds;
    }
}

if (only.Contains("k"))
{
    // The operator alone at a decode step's shapes: one-node sessions (y, x → SegmentedLora) per adapted projection,
    // every token on one rank-`rank` adapter; the fused units (default) and the two phases alternate call by call, and
    // per-call medians are summed over a step's calls (4 projections × layers). No model graph around it, so the figure
    // is the kernel's, not the step's, with its inputs in cache (A and B come from memory in a real step).
    Console.WriteLine($"### The operator alone (one adapter of rank {rank}, per-call medians × {AdapterFactors.ProjectionCount * c.NumLayers} calls per step)");
    Console.WriteLine();
    Console.WriteLine("| batch | two phases ms per step | fused units ms per step | fused / two phases | fused GFLOP/s |");
    Console.WriteLine("|---|---|---|---|---|");
    var calls = Int("calls", 400);
    foreach (var b in batches)
    {
        double twoSum = 0, fusedSum = 0, flops = 0;
        for (var p = 0; p < AdapterFactors.ProjectionCount; p++)
        {
            var (inDim, outDim) = AdapterFactors.Shape(c, (AdaptedProjection)p);
            var (two, fused) = KernelProbe.Time(b, inDim, outDim, rank, calls);
            twoSum += two * c.NumLayers;
            fusedSum += fused * c.NumLayers;
            flops += 2.0 * b * rank * (inDim + outDim) * c.NumLayers;
        }
        Console.WriteLine($"| {b} | {twoSum:F3} | {fusedSum:F3} | {fusedSum / twoSum:F3} | {flops / (fusedSum / 1e3) / 1e9:F0} |");
    }
    Console.WriteLine();
}

if (only.Contains("p"))
{
    // Where the adapter time of a decode step goes: alternating single steps, base vs every row on one adapter, with the
    // operator's per-phase timer on during the adapter steps (SegmentedLoraProfile). Phase times are per-call medians
    // summed over a step's calls (robust to preemption on a loaded machine); step times are medians of single steps.
    // The byte floor is the adapter bytes the step reads ÷ the measured read bandwidth: what the step must add at least.
    Console.WriteLine($"### Where the adapter time goes (alternating single decode steps, one adapter; read bandwidth {bandwidth / 1e9:F1} GB/s)");
    Console.WriteLine();
    Console.WriteLine("| batch | base step ms | adapter step ms | overhead (of medians) | process CPU ms per step, base / adapter (overhead) | op calls / dispatches per step | fixed µs per call | shrink ms | expand ms (fused units: both phases) | op ms (% of base step) | y KB per step | adapter MB per step | byte floor ms (% of base step) |");
    Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    foreach (var b in batches)
    {
        using var baseDec = new BatchDecoder(model, b);
        using var adDec = new BatchDecoder(model, b);
        adDec.Adapters!.Write(slots - 1, pool[0]);
        var rng = new Random(5);
        foreach (var (dec, adapted) in new[] { (baseDec, false), (adDec, true) })
        {
            for (var r = 0; r < b; r++)
            {
                var seq = dec.TryAllocate()!;
                if (adapted) dec.SetAdapter(seq, slots - 1);
                var p = new int[prompt];
                for (var k = 0; k < prompt; k++) p[k] = rng.Next(256);
                dec.Prefill(seq, p);
            }
        }
        // With --compare-general, the adapter step alternates between the general two-phase path (the operator before
        // issue #19's small-step pass) and the default, each row against the same base steps.
        // 0: default; 1: general path (no small-step pass); 2: small-step pass inline only; 3: general path as two
        // phases (the operator before the fused units).
        var paths = Str("compare-general", "false") == "true" ? new[] { 1, 2, 3, 0 } : new[] { 0 };
        var baseMs = new List<double>();
        var baseCpu = new List<double>();
        var adMs = paths.Select(_ => new List<double>()).ToArray();
        var adCpu = paths.Select(_ => new List<double>()).ToArray();
        var sums = new SegmentedLoraPhases[paths.Length];
        var n = Math.Max(4, tokens / paths.Length - 2); // the base decoder steps once per path: stay within the context
        for (var i = -2; i < n; i++)
        {
            if (i == 0) SegmentedLoraProfile.Reset();
            for (var k = 0; k < paths.Length; k++)
            {
                var (t1, c1) = PhaseStep(baseDec);
                SegmentedLoraProfile.GeneralPathOnly = paths[k] == 1;
                SegmentedLoraProfile.SmallStepInline = paths[k] == 2;
                SegmentedLoraProfile.TwoPhase = paths[k] == 3;
                if (paths[k] == 3) SegmentedLoraProfile.GeneralPathOnly = true;
                SegmentedLoraProfile.Enabled = i >= 0;
                var before = SegmentedLoraProfile.Snapshot();
                var (t2, c2) = PhaseStep(adDec);
                if (i >= 0) sums[k] += SegmentedLoraProfile.Snapshot() - before;
                SegmentedLoraProfile.Enabled = false;
                SegmentedLoraProfile.GeneralPathOnly = false;
                SegmentedLoraProfile.SmallStepInline = false;
                SegmentedLoraProfile.TwoPhase = false;
                if (i < 0) continue;
                baseMs.Add(t1);
                baseCpu.Add(c1);
                adMs[k].Add(t2);
                adCpu[k].Add(c2);
            }
        }
        var phases = sums.Select((ph, k) => (ph, SegmentedLoraProfile.MedianStep((int)(ph.Calls / n), k, paths.Length))).ToArray();
        double mb = Median(baseMs), cb = Median(baseCpu);
        for (var k = 0; k < paths.Length; k++)
        {
            var (ph, (fixedMs, shrinkMs, expandMs)) = phases[k];
            var callsPerStep = (int)(ph.Calls / n);
            double ma = Median(adMs[k]), ca = Median(adCpu[k]), op = fixedMs + shrinkMs + expandMs;
            var floorMs = ph.AdapterBytes / (double)n / bandwidth * 1000;
            var label = paths.Length == 1 ? $"{b}" : $"{b} ({(paths[k] switch { 1 => "general path", 2 => "small pass inline", 3 => "two phases", _ => "default" })})";
            Console.WriteLine($"| {label} | {mb:F2} | {ma:F2} | {100 * (ma / mb - 1):F1}% | {cb:F2} / {ca:F2} ({100 * (ca / cb - 1):F1}%) | {callsPerStep} / {ph.Dispatches / (double)n:F0} | {1000 * fixedMs / Math.Max(1, callsPerStep):F1} | {shrinkMs:F2} | {expandMs:F2} | {op:F2} ({100 * op / mb:F1}%) | {ph.YBytes / (double)n / 1e3:F0} | {ph.AdapterBytes / (double)n / 1e6:F2} | {floorMs:F2} (+{100 * floorMs / mb:F1}%) |");
        }
    }
    Console.WriteLine();

    static (double Wall, double Cpu) PhaseStep(BatchDecoder dec)
    {
        foreach (var seq in dec.Active) seq.PendingToken = 7;
        var cpu = BenchClock.ProcessCpuSeconds() * 1e3;
        var sw = Stopwatch.StartNew();
        dec.Decode();
        return (sw.Elapsed.TotalMilliseconds, BenchClock.ProcessCpuSeconds() * 1e3 - cpu);
    }
}

if (only.Contains("a"))
{
    Console.WriteLine("### One adapter vs base only (closed loop, concurrency = batch)");
    Console.WriteLine();
    // Byte floor (issue #19): the adapter bytes a decode step reads ÷ the measured read bandwidth, added to the base
    // decode step: the least overhead the adapter can cost on this machine.
    Console.WriteLine("| batch | base tok/s | one adapter tok/s | overhead (median, min–max over reps) | adapter MB per decode step | base decode ms per step | byte floor overhead | distance to the floor (points) |");
    Console.WriteLine("|---|---|---|---|---|---|---|---|");
    foreach (var b in batches)
    {
        var one = new Dictionary<string, AdapterRef> { ["x"] = new AdapterRef("bench/x@1", pool[0]) };
        var stats = new RunStats();
        var (bt, at, ratios) = Alternate(b, null, one, new AdapterPopularitySpec { Kind = AdapterPopularityKind.Single, Names = ["x"] }, slots, stats);
        var baseStep = stats.BaseDecodeMs / Math.Max(1, stats.BaseSteps);
        var floorPct = 100 * stats.BytesPerStep / bandwidth * 1000 / baseStep;
        var overhead = ratios.Select(r => 100 * (1 / r - 1)).Order().ToList();
        Console.WriteLine($"| {b} | {bt:F1} | {at:F1} | {Pct(ratios)} | {stats.BytesPerStep / 1e6:F2} | {baseStep:F2} | {floorPct:F1}% | {overhead[overhead.Count / 2] - floorPct:F1} |");
    }
    Console.WriteLine();
}

if (only.Contains("b"))
{
    Console.WriteLine($"### N distinct adapters vs base only (closed loop, concurrency 32, {slots} slots)");
    Console.WriteLine();
    Console.WriteLine("| N | popularity | base tok/s | adapters tok/s | kept (median, min–max) | distinct adapters per step | adapter MB read per step | base weights MB per step | slot writes | block swaps (ms each) per 100 steps | grid G×T per mixed step | rows per decode step, base / adapters | decode ms per step, base / adapters | prefill ms per step, base / adapters | slot-write ms per step | other ms per step, base / adapters | byte floor kept | distance to the floor (points) | slot activations per s | TTFT ms p50 / p99, requests that activated their adapter | TTFT ms p50 / p99, the others |");
    Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    foreach (var n in ns)
    {
        foreach (var alpha in new[] { 1.0, 0.0 })
        {
            if (n == 1 && alpha == 0.0) continue;
            var names = Enumerable.Range(0, n).Select(i => $"a{i}").ToArray();
            var refs = names.Select((name, i) => (name, r: new AdapterRef($"bench/{name}@1", pool[i % pool.Length]))).ToDictionary(x => x.name, x => x.r);
            var stats = new RunStats();
            var (bt, at, ratios) = Alternate(32, null, refs, AdapterPopularitySpec.PowerLawOver(names, alpha), slots, stats);
            Console.WriteLine($"| {n} | {(alpha == 0 ? "uniform" : $"α = {alpha}")} | {bt:F1} | {at:F1} | {Pct(ratios, kept: true)} | {stats.GroupsPerStep:F1} | {stats.BytesPerStep / 1e6:F1} | {WeightBytes(c) / 1e6:F0} | {stats.Swaps} | {100.0 * stats.Moves / Math.Max(1, stats.Steps):F1} ({stats.MoveMs / Math.Max(1, stats.Moves):F2}) | {(double)stats.Grid / Math.Max(1, stats.MixedSteps):F1} | {stats.BaseRowsPerStep:F1} / {stats.RowsPerStep:F1} | {stats.BaseDecodeMs / stats.BaseSteps:F1} / {stats.DecodeMs / stats.Steps:F1} | {stats.BasePrefillMs / stats.BaseSteps:F1} / {stats.PrefillMs / stats.Steps:F1} | {stats.ActivationMs / stats.Steps:F1} | {(stats.BaseWallMs - stats.BaseDecodeMs - stats.BasePrefillMs) / stats.BaseSteps:F1} / {(stats.WallMs - stats.DecodeMs - stats.PrefillMs) / stats.Steps:F1} | {FloorKept(stats):F1}% | {KeptMedian(ratios) - FloorKept(stats):F1} | {stats.Swaps / (stats.WallMs / 1000):F1} | {Ttft(stats.ColdTtft)} | {Ttft(stats.WarmTtft)} |");
        }
    }
    Console.WriteLine();
}

if (only.Contains("c"))
{
    // Two baselines with one adapter per batch (a single slot; the scheduler's fairness rotates adapters): "switch" gets
    // each adapter change for the price of a slot write (PEFT's set_adapter on unmerged LoRA, which also pays the
    // unmerged adapter's compute every step, as our steps do); "swap-and-merge" also pays, on the scheduler thread, the
    // real arithmetic of unmerging the old adapter from and merging the new one into the base weights (a copy: ONNX
    // Runtime's pre-packed weights cannot be rewritten in place), as a server that merges for speed blocks to do. Its
    // steps still compute the adapter unmerged (5–10% more than a merged step), which is stated beside the figures.
    var merger = new Merger(c);
    Console.WriteLine($"### Heterogeneous batching vs one adapter per batch, N = 32, concurrency 32 (a merge or unmerge of one adapter: {merger.Measure(pool[0]):F1} ms, {threads} threads)");
    Console.WriteLine();
    Console.WriteLine("| popularity | one adapter per batch, switch tok/s | swap-and-merge tok/s (switches, ms each) | heterogeneous tok/s | heterogeneous / switch | heterogeneous / swap-and-merge (median, min–max) |");
    Console.WriteLine("|---|---|---|---|---|---|");
    foreach (var alpha in new[] { 1.0, 0.0 })
    {
        var names = Enumerable.Range(0, 32).Select(i => $"m{i}").ToArray();
        var refs = names.Select((name, i) => (name, r: new AdapterRef($"bench/{name}@1", pool[i % pool.Length]))).ToDictionary(x => x.name, x => x.r);
        var spec = AdapterPopularitySpec.PowerLawOver(names, alpha);
        var free = new List<double>();
        var swap = new List<double>();
        var hetero = new List<double>();
        merger.Reset();
        for (var r = -1; r < reps; r++)
        {
            var s0 = ClosedLoop(32, refs, spec, adapterSlots: 1, null, new SchedulerOptions { AdapterFairnessSteps = 8, MaxQueue = 4096 });
            var s1 = ClosedLoop(32, refs, spec, adapterSlots: 1, null, new SchedulerOptions { AdapterFairnessSteps = 8, MaxQueue = 4096 }, merge: merger);
            var s2 = ClosedLoop(32, refs, spec, adapterSlots: slots, null);
            if (r < 0)
            {
                merger.Reset();
                continue;
            }
            free.Add(s0);
            swap.Add(s1);
            hetero.Add(s2);
        }
        var ratios = hetero.Zip(swap, (h, s) => h / s).ToList();
        var freeRatios = hetero.Zip(free, (h, s) => h / s).ToList();
        Console.WriteLine($"| {(alpha == 0 ? "uniform" : $"α = {alpha}")} | {Median(free):F1} | {Median(swap):F1} ({merger.Switches / reps}, {merger.Ms / Math.Max(1, merger.Switches):F1}) | {Median(hetero):F1} | {Median(freeRatios):F2}× | {Median(ratios):F2}× ({ratios.Min():F2}–{ratios.Max():F2}) |");
    }
    Console.WriteLine();
}

if (only.Contains("d"))
{
    Console.WriteLine($"### Cold activation: store → slot (embedded Garnet, ComPEFT default codec and lossless), {coldReps} runs after 5 warm-ups");
    Console.WriteLine();
    Console.WriteLine("| rank | codec | container bytes | store read + verify ms p50 | decode ms p50 | store read+verify+decode+materialise ms p50 / p99 | convert ms p50 | slot write ms p50 / p99 | total p50 / p99 | MB allocated, decode → slot | minor page faults in the decode p50 (min–max) |");
    Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|");
    using var garnet = new EmbeddedGarnet(memory: "1g");
    using var mux = await ConnectionMultiplexer.ConnectAsync(garnet.ConnectionString);
    var store = new RedisAdapterStore(mux, new AdapterStoreOptions { KeepVersions = 1 });
    var shape = BaseModelShape.FromConfig(c);
    var ingestor = new AdapterIngestor(store, new StaticBaseModelCatalog().Add("bench-base", shape));
    using var table = new AdapterSlotTable(c, 2, 64);
    const int ColdWarmups = 5; // per configuration: the first activations also grow the GC heap
    foreach (var r in new[] { 8, 16, 64 })
    {
        var (cfg, file) = PeftGpt2(c, r, seed: r);
        foreach (var (codecName, codec) in new[] { ("ComPEFT", new CodecOptions { Codec = AdapterCodec.ComPeft }), ("lossless", new CodecOptions { Codec = AdapterCodec.Lossless }) })
        {
            var name = $"r{r}-{codecName.ToLowerInvariant()}";
            var report = await ingestor.IngestAsync(new UploadRequest("bench", name, "bench-base", new PeftFiles(cfg, file), codec, KeepOriginal: false), CancellationToken.None);
            var fetch = new List<double>();
            var megabytes = new List<double>();
            var decode = new List<double>();
            var read = new List<double>();
            var convert = new List<double>();
            var write = new List<double>();
            var total = new List<double>();
            var faults = new List<double>();
            for (var i = -ColdWarmups; i < coldReps; i++)
            {
                // The node's path (AdapterStoreExtensions.LoadAdapterAsync, then FromLora, then the slot write), timed per phase.
                var sw = Stopwatch.StartNew();
                var stored = await store.ReadAsync("bench", name, null, CancellationToken.None) ?? throw new InvalidOperationException("adapter vanished");
                var t0 = sw.Elapsed.TotalMilliseconds;
                var allocated = GC.GetAllocatedBytesForCurrentThread(); // decode → slot runs on this thread; the fetch may not
                var faults0 = MinorFaults();
                var payload = AdapterContainer.Decode(stored.Container);
                var t1a = sw.Elapsed.TotalMilliseconds;
                var decodeFaults = MinorFaults() - faults0;
                var adapter = AdapterMaterializer.Materialize(payload);
                var t1 = sw.Elapsed.TotalMilliseconds;
                var factors = AdapterFactors.FromLora(c, adapter.Modules.Select(m => new LoraModule(m.Module, m.Layer, m.Rank, m.Scale, m.A, m.B)), consume: consume);
                var t2 = sw.Elapsed.TotalMilliseconds;
                table.Write(i & 1, factors);
                var t3 = sw.Elapsed.TotalMilliseconds;
                allocated = GC.GetAllocatedBytesForCurrentThread() - allocated;
                if (i < 0) continue;
                fetch.Add(t0);
                decode.Add(t1a - t0);
                read.Add(t1);
                convert.Add(t2 - t1);
                write.Add(t3 - t2);
                total.Add(t3);
                megabytes.Add(allocated / 1e6);
                faults.Add(decodeFaults);
            }
            Console.WriteLine($"| {r} | {codecName} | {report.Metadata.StoredBytes:N0} | {Median(fetch):F1} | {Median(decode):F1} | {Median(read):F1} / {P99(read):F1} | {Median(convert):F1} | {Median(write):F2} / {P99(write):F2} | {Median(total):F1} / {P99(total):F1} | {Median(megabytes):F1} | {Median(faults):F0} ({faults.Min():F0}–{faults.Max():F0}) |");
        }
    }
    Console.WriteLine();
}
return;

// Alternates base and adapter closed-loop runs; returns median tok/s of each and the per-rep ratios adapter/base.
(double Base, double Adapter, List<double> Ratios) Alternate(int concurrency, IReadOnlyDictionary<string, AdapterRef>? none,
    IReadOnlyDictionary<string, AdapterRef> adapters, AdapterPopularitySpec spec, int adapterSlots, RunStats? stats = null)
{
    var b = new List<double>();
    var a = new List<double>();
    for (var r = -1; r < reps; r++)
    {
        var tb = ClosedLoop(concurrency, none, null, adapterSlots, null, baseStats: r < 0 ? null : stats);
        var ta = ClosedLoop(concurrency, adapters, spec, adapterSlots, r < 0 ? null : stats);
        if (r < 0) continue;
        b.Add(tb);
        a.Add(ta);
    }
    return (Median(b), Median(a), a.Zip(b, (x, y) => x / y).ToList());
}

// Closed loop through LoadGen.Core: `concurrency` requests in flight, concurrency × perClient requests of fixed
// lengths whose adapters follow `spec` (base only when null); returns output tok/s from LoadGen's metrics.
double ClosedLoop(int concurrency, IReadOnlyDictionary<string, AdapterRef>? adapters, AdapterPopularitySpec? spec, int adapterSlots,
    RunStats? stats, SchedulerOptions? options = null, RunStats? baseStats = null, Merger? merge = null)
{
    using var decoder = new BatchDecoder(model, concurrency, adapterSlots);
    var observer = new SwapCounter { Merge = merge, Keys = adapters?.Values.ToDictionary(a => a.Key, a => a.Factors) };
    using var scheduler = new GenerationScheduler(decoder, tokenizer, (options ?? new SchedulerOptions { MaxQueue = 4096 }) with { MixedSteps = mixed }, observer);
    var trace = Serving.LoadGen.LoadBenchmark.FixedLengthTrace(concurrency * perClient, prompt, tokens, spec, seed: 7);
    scheduler.Start();
    var point = Serving.LoadGen.LoadBenchmark.ClosedLoopAsync(new SchedulerSender(scheduler, adapters, c.VocabSize), trace, concurrency).GetAwaiter().GetResult();
    scheduler.StopAsync(TimeSpan.FromSeconds(5)).GetAwaiter().GetResult();
    var m = point.Metrics;
    if (m.Completed != trace.Count || m.TotalOutputTokens != (long)trace.Count * tokens)
    {
        throw new InvalidOperationException($"{m.Completed}/{trace.Count} requests, {m.TotalOutputTokens} tokens; failures: {string.Join(", ", point.Failures.Select(f => f.Error))}");
    }
    if (baseStats is not null)
    {
        baseStats.BaseSteps += decoder.DecodeSteps;
        baseStats.BaseDecodeMs += decoder.DecodeTime.TotalMilliseconds;
        baseStats.BasePrefillMs += decoder.PrefillTime.TotalMilliseconds;
        baseStats.BaseWallMs += m.TotalOutputTokens / m.OutputTokenThroughput * 1000;
        baseStats.BaseTokens += m.TotalOutputTokens - m.Completed; // the first token of each request comes from its prefill
    }
    if (stats is not null)
    {
        stats.Tokens += m.TotalOutputTokens - m.Completed;
        stats.Steps += decoder.DecodeSteps;
        stats.DecodeMs += decoder.DecodeTime.TotalMilliseconds;
        stats.PrefillMs += decoder.PrefillTime.TotalMilliseconds;
        stats.WallMs += m.TotalOutputTokens / m.OutputTokenThroughput * 1000;
        stats.Groups += decoder.AdapterGroupsDecoded;
        stats.Bytes += decoder.AdapterBytesDecoded;
        stats.Swaps += observer.Swaps;
        stats.ColdTtft.AddRange(observer.ColdTtft);
        stats.WarmTtft.AddRange(observer.WarmTtft);
        stats.ActivationMs += observer.ActivationMs;
        stats.Moves += decoder.Adapters!.Swaps;
        stats.MoveMs += decoder.Adapters.SwapTime.TotalMilliseconds;
        stats.Grid += decoder.AdapterGridEntriesDecoded;
        stats.MixedSteps += decoder.MixedAdapterSteps;
    }
    return m.OutputTokenThroughput;
}

// Throughput kept at the byte floor: the base decode step plus the adapter bytes per step at the measured bandwidth.
double FloorKept(RunStats stats)
{
    var baseStep = stats.BaseDecodeMs / Math.Max(1, stats.BaseSteps);
    return 100 * baseStep / (baseStep + stats.BytesPerStep / bandwidth * 1000);
}

// The process's minor page faults so far (Linux /proc/self/stat, field 10): first touches of fresh pages.
static long MinorFaults()
{
    var stat = File.ReadAllText("/proc/self/stat");
    var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
    return long.Parse(fields[7], System.Globalization.CultureInfo.InvariantCulture); // fields after the name start at 3 (state)
}

static double KeptMedian(List<double> ratios) => 100 * Median(ratios);

static string Ttft(List<double> ms) => ms.Count == 0 ? "—" : $"{Median(ms):F0} / {P99(ms):F0} ({ms.Count})";

static string Pct(List<double> ratios, bool kept = false)
{
    var v = ratios.Select(r => kept ? 100 * r : 100 * (1 / r - 1)).Order().ToList();
    var unit = kept ? "%" : "%";
    return $"{v[v.Count / 2]:F1}{unit} ({v[0]:F1}–{v[^1]:F1})";
}

static double Median(List<double> xs)
{
    var s = xs.Order().ToList();
    return s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2;
}

static double P99(List<double> xs)
{
    var s = xs.Order().ToList();
    return s[Math.Min(s.Count - 1, (int)Math.Ceiling(0.99 * s.Count) - 1)];
}

static long WeightBytes(ModelConfig c)
{
    long d = c.HiddenSize, f = c.IntermediateSize, q = c.NumHeads * c.HeadDim, kv = c.NumKvHeads * c.HeadDim;
    var up = c.Architecture == ModelArchitecture.Llama ? 2 * f : f;
    return 4 * (c.NumLayers * (d * (q + 2 * kv) + q * d + d * up + f * d) + (long)c.VocabSize * d);
}

static List<LoraModule> RandomLora(ModelConfig c, int rank, int seed)
{
    var rng = new Random(seed);
    var list = new List<LoraModule>();
    int d = c.HiddenSize, f = c.IntermediateSize;
    foreach (var (name, i, o) in new[] { ("attn.c_attn", d, 3 * d), ("attn.c_proj", d, d), ("mlp.c_fc", d, f), ("mlp.c_proj", f, d) })
    {
        for (var l = 0; l < c.NumLayers; l++)
        {
            var a = new float[rank * i];
            var b = new float[o * rank];
            for (var k = 0; k < a.Length; k++) a[k] = (float)(rng.NextDouble() - 0.5) * 0.05f;
            for (var k = 0; k < b.Length; k++) b[k] = (float)(rng.NextDouble() - 0.5) * 0.05f;
            list.Add(new LoraModule(name, l, rank, 2f, a, b));
        }
    }
    return list;
}

static (byte[] Config, byte[] File) PeftGpt2(ModelConfig c, int rank, int seed)
{
    var rng = new Random(seed);
    var entries = new List<SafetensorsWriter.Entry>();
    int d = c.HiddenSize, f = c.IntermediateSize;
    for (var l = 0; l < c.NumLayers; l++)
    {
        foreach (var (module, i, o) in new[] { ("attn.c_attn", d, 3 * d), ("attn.c_proj", d, d), ("mlp.c_fc", d, f), ("mlp.c_proj", f, d) })
        {
            var p = $"base_model.model.transformer.h.{l}.{module}";
            entries.Add(SafetensorsWriter.Entry.F16($"{p}.lora_A.weight", [rank, i], Gaussian(rng, rank * i, 1.0 / Math.Sqrt(i))));
            entries.Add(SafetensorsWriter.Entry.F16($"{p}.lora_B.weight", [o, rank], Gaussian(rng, o * rank, 0.01)));
        }
    }
    var config = $$"""{"peft_type": "LORA", "r": {{rank}}, "lora_alpha": {{2 * rank}}, "target_modules": ["c_attn", "c_proj", "c_fc"], "fan_in_fan_out": true, "bias": "none", "task_type": "CAUSAL_LM"}""";
    return (Encoding.UTF8.GetBytes(config), SafetensorsWriter.ToBytes(entries));
}

static float[] Gaussian(Random rng, int n, double std)
{
    var v = new float[n];
    for (var k = 0; k < n; k++) v[k] = (float)(std * Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
    return v;
}

sealed class RunStats
{
    public long Steps;
    public long Groups;
    public long Bytes;
    public long Swaps;
    public long Moves;
    public double MoveMs;
    public long Grid;
    public long MixedSteps;
    public long BaseSteps;
    public double BaseDecodeMs;
    public double BasePrefillMs;
    public double PrefillMs;
    public double ActivationMs;
    public double DecodeMs;
    public double WallMs;
    public double BaseWallMs;
    public long BaseTokens;
    public long Tokens;
    public readonly List<double> ColdTtft = [];
    public readonly List<double> WarmTtft = [];
    public double RowsPerStep => Steps == 0 ? 0 : (double)Tokens / Steps;
    public double BaseRowsPerStep => BaseSteps == 0 ? 0 : (double)BaseTokens / BaseSteps;
    public double GroupsPerStep => Steps == 0 ? 0 : (double)Groups / Steps;
    public double BytesPerStep => Steps == 0 ? 0 : (double)Bytes / Steps;
}

sealed class SwapCounter : ISchedulerObserver
{
    public long Swaps;
    // Time to first token of the requests whose admission activated their adapter (the scheduler activates it right
    // before it reports the request started, on its own thread) and of the others. Every callback runs on that thread.
    public readonly List<double> ColdTtft = [];
    public readonly List<double> WarmTtft = [];
    private readonly HashSet<GenerationHandle> _cold = [];
    private bool _activated;

    public void OnRequestStarted(GenerationHandle request, TimeSpan queued)
    {
        if (_activated) _cold.Add(request);
        _activated = false;
    }

    public void OnFirstToken(GenerationHandle request, TimeSpan timeToFirstToken) =>
        (_cold.Remove(request) ? ColdTtft : WarmTtft).Add(timeToFirstToken.TotalMilliseconds);

    public void OnOutputToken(TimeSpan sincePrevious) { }
    public void OnPromptTokens(int count) { }
    public void OnRequestFinished(GenerationHandle request, FinishReason reason) { }
    public void OnStepFailed(Exception error) => Console.Error.WriteLine(error);
    public double ActivationMs;
    public Merger? Merge;
    public Dictionary<string, AdapterFactors>? Keys;
    public void OnAdapterActivated(string key, int slot, string? evicted, TimeSpan copy)
    {
        Swaps++;
        _activated = true;
        ActivationMs += copy.TotalMilliseconds;
        // Swap-and-merge: the scheduler thread is here, between admitting the request and the next step.
        Merge?.Switch(evicted is null ? null : Keys![evicted], Keys![key]);
    }
}

/// <summary>
/// What a swap-and-merge server pays per adapter change, for real: W[in, out] −= Aᵀ·B of the old adapter and += Aᵀ·B of
/// the new one, on every adapted projection of a copy of the base weights (layers and projections in parallel; each
/// weight row stays in cache while the rank's rows are added).
/// </summary>
sealed class Merger(ModelConfig c)
{
    private readonly float[][] _weights = Enumerable.Range(0, c.NumLayers * AdapterFactors.ProjectionCount)
        .Select(i => { var (i0, o0) = AdapterFactors.Shape(c, (AdaptedProjection)(i % AdapterFactors.ProjectionCount)); return new float[i0 * o0]; }).ToArray();

    public long Switches;
    public double Ms;

    public void Reset() => (Switches, Ms) = (0, 0);

    /// <summary>One merge's time in ms (median of 5), outside any run.</summary>
    public double Measure(AdapterFactors adapter)
    {
        var times = new List<double>();
        for (var i = 0; i < 5; i++)
        {
            var sw = Stopwatch.StartNew();
            Apply(adapter, 1f);
            times.Add(sw.Elapsed.TotalMilliseconds);
            if (i == 0) Check(adapter);
            Apply(adapter, -1f);
        }
        return times.Order().ElementAt(2);
    }

    /// <summary>The merged weights (from zero) hold Aᵀ·B, entry by entry, against a direct sum (sampled entries).</summary>
    private void Check(AdapterFactors adapter)
    {
        var rng = new Random(1);
        for (var n = 0; n < 200; n++)
        {
            var i = rng.Next(_weights.Length);
            if (adapter.Get(i / AdapterFactors.ProjectionCount, (AdaptedProjection)(i % AdapterFactors.ProjectionCount)) is not { } u) continue;
            var (inDim, outDim) = AdapterFactors.Shape(c, (AdaptedProjection)(i % AdapterFactors.ProjectionCount));
            int row = rng.Next(inDim), col = rng.Next(outDim);
            double expected = 0;
            for (var k = 0; k < u.Rank; k++) expected += (double)u.A[k * inDim + row] * u.B[k * outDim + col];
            if (Math.Abs(_weights[i][row * outDim + col] - expected) > 1e-4 * (1 + Math.Abs(expected)))
            {
                throw new InvalidOperationException($"merge kernel wrong at projection {i}, [{row}, {col}]: {_weights[i][row * outDim + col]} vs {expected}");
            }
        }
    }

    public void Switch(AdapterFactors? evicted, AdapterFactors next)
    {
        var sw = Stopwatch.StartNew();
        if (evicted is not null) Apply(evicted, -1f);
        Apply(next, 1f);
        Ms += sw.Elapsed.TotalMilliseconds;
        Switches++;
    }

    private void Apply(AdapterFactors adapter, float sign) => Parallel.For(0, _weights.Length, i =>
    {
        var update = adapter.Get(i / AdapterFactors.ProjectionCount, (AdaptedProjection)(i % AdapterFactors.ProjectionCount));
        if (update is null) return;
        var (inDim, outDim) = AdapterFactors.Shape(c, (AdaptedProjection)(i % AdapterFactors.ProjectionCount));
        var w = _weights[i];
        for (var row = 0; row < inDim; row++)
        {
            var target = w.AsSpan(row * outDim, outDim);
            var k = 0;
            for (; k + 4 <= update.Rank; k += 4) AddFour(update, k, row, inDim, outDim, sign, target);
            for (; k < update.Rank; k++)
            {
                System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(update.B.AsSpan(k * outDim, outDim), sign * update.A[k * inDim + row], target, target);
            }
        }
    });

    /// <summary>target += Σ_{k..k+3} a[k][row] · B[k]: four rank rows per pass over the weight row (one load and store of it, not four).</summary>
    private static void AddFour(LowRankUpdate u, int k, int row, int inDim, int outDim, float sign, Span<float> target)
    {
        var a0 = new System.Numerics.Vector<float>(sign * u.A[k * inDim + row]);
        var a1 = new System.Numerics.Vector<float>(sign * u.A[(k + 1) * inDim + row]);
        var a2 = new System.Numerics.Vector<float>(sign * u.A[(k + 2) * inDim + row]);
        var a3 = new System.Numerics.Vector<float>(sign * u.A[(k + 3) * inDim + row]);
        ReadOnlySpan<float> b0 = u.B.AsSpan(k * outDim, outDim), b1 = u.B.AsSpan((k + 1) * outDim, outDim),
            b2 = u.B.AsSpan((k + 2) * outDim, outDim), b3 = u.B.AsSpan((k + 3) * outDim, outDim);
        var width = System.Numerics.Vector<float>.Count;
        var j = 0;
        for (; j + width <= outDim; j += width)
        {
            var t = new System.Numerics.Vector<float>(target[j..]);
            t += new System.Numerics.Vector<float>(b0[j..]) * a0 + new System.Numerics.Vector<float>(b1[j..]) * a1
               + new System.Numerics.Vector<float>(b2[j..]) * a2 + new System.Numerics.Vector<float>(b3[j..]) * a3;
            t.CopyTo(target[j..]);
        }
        for (; j < outDim; j++) target[j] += b0[j] * a0[0] + b1[j] * a1[0] + b2[j] * a2[0] + b3[j] * a3[0];
    }
}

/// <summary>
/// LoadGen's request sender, in process: the trace's prompt length becomes random token ids, its adapter name the
/// matching <see cref="AdapterRef"/>; every generated token is a chunk (timestamps for TTFT/ITL).
/// </summary>
sealed class SchedulerSender(GenerationScheduler scheduler, IReadOnlyDictionary<string, AdapterRef>? adapters, int vocab) : IRequestSender
{
    public async Task<RequestRecord> SendAsync(TraceRequest request, long originTimestamp, CancellationToken cancellationToken)
    {
        double Now() => Stopwatch.GetElapsedTime(originTimestamp).TotalSeconds;
        var rng = new Random(request.Id);
        var prompt = new int[request.PromptTokens];
        for (var i = 0; i < prompt.Length; i++) prompt[i] = rng.Next(Math.Min(vocab, 256));
        var start = Now();
        var generation = new GenerationRequest
        {
            PromptTokens = prompt,
            Sampling = new SamplingParameters { MaxTokens = request.OutputTokens, Temperature = 0f, IgnoreEos = true },
            Adapter = request.Adapter is null ? null : adapters![request.Adapter],
        };
        if (scheduler.Submit(generation, out var handle) != SubmitStatus.Accepted)
        {
            return new RequestRecord { Id = request.Id, Adapter = request.Adapter, StartSeconds = start, EndSeconds = Now(), Error = "refused" };
        }
        var chunks = new List<double>(request.OutputTokens);
        var tokens = 0;
        await foreach (var e in handle!.Events.ReadAllAsync(cancellationToken))
        {
            if (e.Kind == GenerationEventKind.Token && e.TokenId >= 0)
            {
                tokens++;
                chunks.Add(Now());
            }
        }
        return new RequestRecord
        {
            Id = request.Id, Adapter = request.Adapter, StartSeconds = start, EndSeconds = Now(), ChunkSeconds = chunks,
            PromptTokens = prompt.Length, OutputTokens = handle.CompletionTokens, UsageReported = true,
        };
    }
}
