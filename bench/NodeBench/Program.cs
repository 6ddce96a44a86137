using System.Diagnostics;
using System.Globalization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Serving.Fixtures;
using Serving.Inference.Engine;
using Serving.Inference.Node.Hosting;
using Serving.Inference.Node.OpenAI;
using Serving.Inference.Node.Status;
using Serving.Inference.Runtime;
using Serving.Inference.Sampling;
using Serving.Inference.Tokenization;
using Serving.LoadGen;
using Serving.LoadGen.Client;
using Serving.LoadGen.Metrics;
using Serving.LoadGen.Workload;

// Node throughput: aggregate output tokens/s of streaming HTTP clients at several concurrencies against the same
// requests sent one after another, and the HTTP + scheduling overhead against driving the engine in-process
// (batch 1, same sampler) for the same requests. Greedy, ignore_eos, fixed lengths, so every run generates the same tokens.
// The HTTP clients are the load generator's (tools/LoadGen.Core), so TTFT/ITL and throughput use its definitions.
// usage: NodeBench [--shape gpt2-small] [--levels 1,8,32] [--tokens 32] [--prompt 16] [--sequential 8] [--rounds 1] [--threads N] [--reps 2]
//                  [--mixed off|on|both] [--step-tokens 128] [--prefill-tokens 512] [--poisson RATE] [--poisson-requests N]
//                  [--system N (shared prompt start)] [--prefix-reuse true|false]
var opts = args.Select((a, i) => (a, i)).Where(p => p.a.StartsWith("--", StringComparison.Ordinal))
    .ToDictionary(p => p.a[2..], p => p.i + 1 < args.Length ? args[p.i + 1] : "");
string Opt(string k, string d) => opts.TryGetValue(k, out var v) ? v : d;
var inv = CultureInfo.InvariantCulture;
var shape = Opt("shape", "gpt2-small");
var levels = Opt("levels", "1,8,32").Split(',').Select(int.Parse).ToArray();
int tokens = int.Parse(Opt("tokens", "32"), inv), promptLen = int.Parse(Opt("prompt", "16"), inv);
int sequential = int.Parse(Opt("sequential", "8"), inv), reps = int.Parse(Opt("reps", "2"), inv);
int rounds = int.Parse(Opt("rounds", "1"), inv);
var threads = int.Parse(Opt("threads", Environment.ProcessorCount.ToString(inv)), inv);
var maxBatch = levels.Max();
var context = promptLen + tokens + 8;

string dir = Path.GetFullPath(Path.Combine(".fixtures", shape));
if (!File.Exists(Path.Combine(dir, "model.safetensors")))
{
    Console.WriteLine($"writing random {shape} checkpoint to {dir}");
    FixtureCheckpoint.Write(dir, FixtureShape.Named(shape));
}
// The fixture's byte tokenizer gives text only to ids 0..255, so a random model's tokens (almost all above 255) would
// stream no text and the node would send no per-token chunk at all: the streaming path would go unmeasured. The node
// and the engine therefore load a copy of the checkpoint with a GPT-2-format tokenizer in which
// every id has text: the 256 byte-level symbols, then " w" + letters for each further id, <|endoftext|> last, no merges.
dir = WithTextForEveryToken(dir);
// Prompts of exactly promptLen tokens (one letter = one token without merges), different per request.
// With --system N the first N tokens are the same for every request (a shared system prompt, for prefix reuse).
var systemLen = int.Parse(Opt("system", "0"), inv);
string Prompt(int i) => string.Concat(Enumerable.Range(0, promptLen).Select(k => (char)('a' + (k < systemLen ? k * 5 : i * 7 + k * 3) % 26)));

// 1. Engine in-process, batch 1, the same requests one after another (its own copy of the model).
// Spinning off, as the node runs by default (NodeOptions.OrtSpin): the thread pool is process-wide, so the in-process
// engine and the node share the setting and the overhead ratio compares like with like.
using var model = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = 1, MaxContext = context, Threads = threads, SpinThreads = false });
using var dec = new BatchDecoder(model, 1);
var tokenizer = Serving.Inference.Tokenization.TokenizerLoader.Load(dir, model.Config.VocabSize);
double EngineTokensPerSecond()
{
    var p = new SamplingParameters { Temperature = 0, MaxTokens = tokens, IgnoreEos = true };
    var sw = new Stopwatch();
    for (var r = -1; r < sequential; r++) // r = -1 warms up
    {
        var prompt = tokenizer.Encode(Prompt(r + 1000));
        var sampler = new TokenSampler(p, model.Config.VocabSize, prompt);
        var detok = tokenizer.CreateStreamingDecoder();
        if (r == 0) sw.Start();
        var seq = dec.TryAllocate()!;
        var logits = dec.Prefill(seq, prompt);
        for (var t = 0; t < tokens; t++)
        {
            var next = sampler.Sample(logits);
            sampler.Accept(next);
            _ = detok.Append(next);
            if (t == tokens - 1) break;
            seq.PendingToken = next;
            logits = dec.Decode();
        }
        dec.Release(seq);
    }
    return sequential * tokens / sw.Elapsed.TotalSeconds;
}

// 1b. Engine in-process at batch c: the same c requests as the node's concurrency-c point, prefilled one at a time
// (batch 1, as the scheduler does) and then decoded together, each row sampled and detokenised. The node's ceiling:
// what it would reach with no scheduling, HTTP or client cost. (DecodeBench's batch-32 figure has no prefill.)
// Loaded with the packed blocks too (1c); the ordinary decode step is the same either way (DecodeBench --load-variants).
var engineStepTokens = int.Parse(Opt("step-tokens", "128"), inv);
using var batchModel = DecoderModel.Load(dir, new RuntimeOptions
{
    MaxBatch = maxBatch, MaxContext = context, Threads = threads, SpinThreads = false, PackedSteps = true, MaxStepTokens = engineStepTokens,
});
using var batchDec = new BatchDecoder(batchModel, maxBatch);
double EngineBatchTokensPerSecond(int c)
{
    var sw = Stopwatch.StartNew();
    var rows = new BatchRow[c];
    for (var i = 0; i < c; i++)
    {
        rows[i] = NewRow(i, out var prompt);
        rows[i].Take(batchDec.Prefill(rows[i].Seq, prompt));
    }
    return DecodeTogether(rows, sw);
}

// 1c. The same c requests with the schedule mixed steps aim for when all arrive at once: the prompts packed into as
// few steps as the node's step budget (--step-tokens) allows, then decode steps of all c rows. The mixed-steps node's
// ceiling on this machine: no HTTP, no arrival spread, no scheduling.
double EngineMixedBatchTokensPerSecond(int c, bool packedDecode = false)
{
    var vocab = batchModel.Config.VocabSize;
    var sw = Stopwatch.StartNew();
    var rows = new BatchRow[c];
    var prompts = new int[c][];
    for (var i = 0; i < c; i++) rows[i] = NewRow(i, out prompts[i]);
    var done = new int[c]; // prompt tokens in the cache
    var entryRow = new int[c];
    for (var next = 0; next < c;)
    {
        batchDec.BeginStep();
        var entries = 0;
        for (var i = next; i < c && batchDec.StepTokens < engineStepTokens; i++)
        {
            var take = Math.Min(prompts[i].Length - done[i], engineStepTokens - batchDec.StepTokens);
            batchDec.AddToStep(rows[i].Seq, prompts[i].AsSpan(done[i], take));
            done[i] += take;
            entryRow[entries++] = i;
        }
        var logits = batchDec.RunStep();
        for (var e = 0; e < entries; e++)
        {
            var i = entryRow[e];
            if (done[i] == prompts[i].Length) rows[i].Take(logits.Slice(e * vocab, vocab)); // else a chunk: the prompt goes on next step
        }
        while (next < c && done[next] == prompts[next].Length) next++;
    }
    return DecodeTogether(rows, sw, packedDecode);
}

// Request i of the batch runs (the prompts the node's concurrency points send), greedy, detokenised as the node does.
BatchRow NewRow(int i, out int[] prompt)
{
    prompt = tokenizer.Encode(Prompt(2000 + i));
    var p = new SamplingParameters { Temperature = 0, MaxTokens = tokens, IgnoreEos = true };
    return new BatchRow(batchDec.TryAllocate()!, new TokenSampler(p, batchModel.Config.VocabSize, prompt), tokenizer.CreateStreamingDecoder());
}

// Every row has its first token: decode steps of all rows to the last token, then output tokens per second since sw.
double DecodeTogether(BatchRow[] rows, Stopwatch sw, bool packedDecode = false)
{
    var vocab = batchModel.Config.VocabSize;
    for (var t = 1; t < tokens; t++)
    {
        ReadOnlySpan<float> logits;
        if (packedDecode)
        {
            batchDec.BeginStep();
            foreach (var seq in batchDec.Active) batchDec.AddToStep(seq);
            logits = batchDec.RunStep();
        }
        else
        {
            logits = batchDec.Decode();
        }
        var active = batchDec.Active;
        for (var r = 0; r < active.Count; r++) rows[Array.FindIndex(rows, x => x.Seq == active[r])].Take(logits.Slice(r * vocab, vocab));
    }
    var elapsed = sw.Elapsed.TotalSeconds;
    foreach (var row in rows) batchDec.Release(row.Seq);
    return rows.Length * tokens / elapsed;
}

Console.WriteLine($"{shape}, {threads} threads, prompt {promptLen}, {tokens} output tokens per request, load average {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");

// 2. The node on loopback: one per scheduling variant (--mixed off|on|both: whole steps, mixed steps, or both side by side).
var variants = Opt("mixed", "off") switch
{
    "off" => new[] { false },
    "on" => [true],
    "both" => [false, true],
    var m => throw new ArgumentException($"--mixed must be off, on or both, got '{m}'"),
};
var stepTokens = Opt("step-tokens", "128");
var prefillTokens = Opt("prefill-tokens", "512");
var poissonRate = double.Parse(Opt("poisson", "0"), inv); // requests/s of an open-loop Poisson point (0: none)
var poissonCount = int.Parse(Opt("poisson-requests", (maxBatch * 4).ToString(inv)), inv);
var nodes = new List<(bool Mixed, WebApplication App, OpenAiLoadClient Load)>();
foreach (var mixed in variants)
{
    var builder = WebApplication.CreateBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
    builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
    {
        ["Node:ModelPath"] = dir, ["Node:ModelId"] = "bench", ["Node:Host"] = "127.0.0.1", ["Node:Port"] = "0",
        ["Node:MaxBatch"] = maxBatch.ToString(inv), ["Node:MaxContext"] = context.ToString(inv), ["Node:Threads"] = threads.ToString(inv),
        ["Node:MaxQueue"] = "1024", ["Logging:LogLevel:Default"] = "Warning",
        ["Node:MixedSteps"] = mixed ? "true" : "false", ["Node:MaxTokensPerStep"] = stepTokens, ["Node:MaxPrefillTokensPerStep"] = prefillTokens,
        ["Node:PrefixReuse"] = Opt("prefix-reuse", "false"),
    });
    builder.AddNodeDefaults();
    builder.Services.AddInferenceNode();
    var app = builder.Build();
    app.MapNodeDefaults();
    app.MapOpenAIApi();
    app.MapNodeStatusApi();
    await app.StartAsync();
    var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
    // The HTTP side is the load generator's (tools/LoadGen.Core): streaming /v1/completions, TTFT/ITL/throughput from
    // its metrics. Prompts are this benchmark's own (exact token counts for the byte tokenizer); lengths are fixed.
    nodes.Add((mixed, app, new OpenAiLoadClient(new ClientOptions
    {
        BaseUrl = new Uri(address), BaseModel = "bench", Endpoint = ApiEndpoint.Completions, IgnoreEos = true, Timeout = TimeSpan.FromMinutes(30),
    })));
}
Console.WriteLine($"scheduling: {string.Join(", ", variants.Select(Variant))}; Node:MaxPrefillTokensPerStep {prefillTokens}, Node:MaxTokensPerStep {stepTokens} (mixed only)");
static string Variant(bool mixed) => mixed ? "mixed steps" : "whole steps";

IReadOnlyList<TraceRequest> Trace(int firstPrompt, int count, double rate = 0)
{
    // Poisson arrivals (exponential gaps, fixed seed) when a rate is given; all at once otherwise.
    var rng = new Random(17);
    var at = 0.0;
    return Enumerable.Range(0, count).Select(k =>
    {
        var arrival = at;
        if (rate > 0) at += -Math.Log(1 - rng.NextDouble()) / rate;
        return new TraceRequest(k, rate > 0 ? arrival : 0, null, promptLen, tokens, Prompt(firstPrompt + k));
    }).ToArray();
}

static void Check(BenchmarkPoint point, int tokens)
{
    if (point.Failures.Count > 0) throw new InvalidOperationException($"{point.Failures.Count} requests failed: {point.Failures[0].Error} {point.Failures[0].ErrorDetail}");
    if (point.Outcome.Records.FirstOrDefault(r => !r.UsageReported || r.OutputTokens != tokens) is { } bad)
    {
        throw new InvalidOperationException($"expected {tokens} tokens with usage, got {bad.OutputTokens} (usage reported: {bad.UsageReported})");
    }
}

// `count` requests, `concurrency` in flight; every request must return exactly `tokens` tokens (checked through usage).
async Task<RunMetrics> PointAsync(OpenAiLoadClient load, int firstPrompt, int count, int concurrency)
{
    var point = await LoadBenchmark.ClosedLoopAsync(load, Trace(firstPrompt, count), concurrency);
    Check(point, tokens);
    return point.Metrics;
}
async Task<RunMetrics> PoissonAsync(OpenAiLoadClient load)
{
    var point = await LoadBenchmark.RunAsync(load, new RunPlan { Requests = Trace(3000, poissonCount, poissonRate), Mode = LoadMode.OpenLoop, Duration = TimeSpan.FromMinutes(30) });
    Check(point, tokens);
    return point.Metrics;
}
Task<RunMetrics> SequentialAsync(OpenAiLoadClient load) => PointAsync(load, 1000, sequential, 1);
// c clients at once, each sending `rounds` requests one after another (rounds 1: one burst of c requests).
Task<RunMetrics> ConcurrentAsync(OpenAiLoadClient load, int c) => PointAsync(load, 2000, c * rounds, c);
// What the node's engine ran during a point (its scheduler's counters): how many steps of each kind, how full, how long.
EngineCounters Engine(bool mixed) => nodes.First(n => n.Mixed == mixed).App.Services.GetRequiredService<ModelHost>().Scheduler.Status.Engine;
static string Steps(EngineCounters d) => string.Create(CultureInfo.InvariantCulture,
    $"{d.DecodeSteps} decode steps ({(double)d.DecodeRows / Math.Max(1, d.DecodeSteps):F1} rows, {d.DecodeTime.TotalMilliseconds / Math.Max(1, d.DecodeSteps):F1} ms each), " +
    $"{d.MixedSteps} mixed steps ({(double)d.MixedStepTokens / Math.Max(1, d.MixedSteps):F1} tokens, {d.MixedStepTime.TotalMilliseconds / Math.Max(1, d.MixedSteps):F1} ms each), " +
    $"{d.Prefills} prefills ({d.PrefillTime.TotalMilliseconds / Math.Max(1, d.Prefills):F1} ms each); engine busy {(d.DecodeTime + d.MixedStepTime + d.PrefillTime).TotalSeconds:F2} s");
static string Latency(RunMetrics m) => $"TTFT p50 {m.TtftMs.P50:F0} ms, ITL p50 {m.ItlMs.P50:F1} / p99 {m.ItlMs.P99:F1} ms";

// Runs alternate (engine, then per node variant: sequential, each concurrency, the Poisson point) so that a shared
// machine's load hits all alike; ratios are taken within a repetition and the median over repetitions is reported.
foreach (var node in nodes)
{
    await PointAsync(node.Load, 999, 1, 1); // warm-up
    foreach (var c in levels.Where(l => l > 1)) await ConcurrentAsync(node.Load, c);
}
foreach (var c in levels.Where(l => l > 1)) // the in-process runs warm up too (JIT tiers, bindings per step size)
{
    _ = EngineBatchTokensPerSecond(c);
    if (variants.Contains(true)) _ = EngineMixedBatchTokensPerSecond(c);
}
var engineRuns = new List<double>();
var seqRuns = variants.ToDictionary(v => v, _ => new List<double>());
var concRuns = variants.ToDictionary(v => v, _ => levels.Where(l => l > 1).ToDictionary(c => c, _ => new List<RunMetrics>()));
var poissonRuns = variants.ToDictionary(v => v, _ => new List<RunMetrics>());
var engineBatchRuns = levels.Where(l => l > 1).ToDictionary(c => c, _ => new List<double>());
var engineMixedRuns = levels.Where(l => l > 1).ToDictionary(c => c, _ => new List<double>());
for (var r = 0; r < reps; r++)
{
    var e = EngineTokensPerSecond();
    engineRuns.Add(e);
    Console.WriteLine($"rep {r}: engine {e:F1} tok/s");
    foreach (var c in engineBatchRuns.Keys)
    {
        var eb = EngineBatchTokensPerSecond(c);
        engineBatchRuns[c].Add(eb / e);
        Console.WriteLine($"rep {r}:   engine in-process at batch {c} (batch-1 prefills): {eb:F1} tok/s ({eb / e:F2}× engine batch 1)");
        if (variants.Contains(true))
        {
            var em = EngineMixedBatchTokensPerSecond(c);
            engineMixedRuns[c].Add(em / e);
            Console.WriteLine($"rep {r}:   engine in-process at batch {c} (prompts in mixed steps of {engineStepTokens} tokens): {em:F1} tok/s ({em / e:F2}× engine batch 1)");
            var ep = EngineMixedBatchTokensPerSecond(c, packedDecode: true);
            Console.WriteLine($"rep {r}:   engine in-process at batch {c} (prompts in mixed steps, decode steps packed too): {ep:F1} tok/s ({ep / e:F2}× engine batch 1; {ep / em:F3}× the above)");
        }
    }
    foreach (var (mixed, _, load) in nodes)
    {
        var seq = await SequentialAsync(load);
        var s1 = seq.OutputTokenThroughput;
        seqRuns[mixed].Add(s1);
        Console.WriteLine($"rep {r}: {Variant(mixed)}: node sequential {s1:F1} ({(1 - s1 / e) * 100:F1}% overhead vs engine; {Latency(seq)})");
        foreach (var c in concRuns[mixed].Keys)
        {
            var before = Engine(mixed);
            var m = await ConcurrentAsync(load, c);
            concRuns[mixed][c].Add(m);
            Console.WriteLine($"rep {r}:   concurrency {c}: {m.OutputTokenThroughput:F1} tok/s ({m.OutputTokenThroughput / s1:F2}× sequential; {Latency(m)})");
            Console.WriteLine($"rep {r}:     engine: {Steps(Engine(mixed).Since(before))}");
        }
        if (poissonRate > 0)
        {
            var m = await PoissonAsync(load);
            poissonRuns[mixed].Add(m);
            Console.WriteLine($"rep {r}:   Poisson {poissonRate} req/s, {poissonCount} requests: {m.OutputTokenThroughput:F1} tok/s; {Latency(m)}");
        }
    }
}
static double Median(IEnumerable<double> v)
{
    var a = v.OrderBy(x => x).ToArray();
    return a.Length % 2 == 1 ? a[a.Length / 2] : (a[a.Length / 2 - 1] + a[a.Length / 2]) / 2;
}
Console.WriteLine();
Console.WriteLine("| scheduling | concurrency | aggregate output tok/s (median) | vs sequential (median of per-rep ratios) | engine in-process at this batch vs engine batch 1 (whole steps: batch-1 prefills; mixed: prompts in mixed steps) | TTFT p50 ms | ITL p50 / p99 ms | ITL p99 / p50 |");
Console.WriteLine("|---|---|---|---|---|---|---|---|");
foreach (var mixed in variants)
{
    Console.WriteLine($"| {Variant(mixed)} | 1 (one after another) | {Median(seqRuns[mixed]):F1} | 1.00× | 1.00× | | | |");
    foreach (var (c, runs) in concRuns[mixed])
    {
        var tps = runs.Select(m => m.OutputTokenThroughput).ToList();
        Console.WriteLine($"| {Variant(mixed)} | {c} | {Median(tps):F1} | {Median(tps.Zip(seqRuns[mixed], (v, s1) => v / s1)):F2}× | {Median((mixed ? engineMixedRuns : engineBatchRuns)[c]):F2}× | " +
            $"{Median(runs.Select(m => m.TtftMs.P50)):F0} | {Median(runs.Select(m => m.ItlMs.P50)):F1} / {Median(runs.Select(m => m.ItlMs.P99)):F1} | {Median(runs.Select(m => m.ItlMs.P99 / m.ItlMs.P50)):F1} |");
    }
    if (poissonRuns[mixed].Count > 0)
    {
        var runs = poissonRuns[mixed];
        Console.WriteLine($"| {Variant(mixed)} | Poisson {poissonRate} req/s | {Median(runs.Select(m => m.OutputTokenThroughput)):F1} | | | " +
            $"{Median(runs.Select(m => m.TtftMs.P50)):F0} | {Median(runs.Select(m => m.ItlMs.P50)):F1} / {Median(runs.Select(m => m.ItlMs.P99)):F1} | {Median(runs.Select(m => m.ItlMs.P99 / m.ItlMs.P50)):F1} |");
    }
}
Console.WriteLine($"engine in-process batch 1: {Median(engineRuns):F1} tok/s; " +
    string.Join("; ", variants.Select(v => $"{Variant(v)} node at concurrency 1: {Median(seqRuns[v]):F1} tok/s, HTTP + scheduling overhead {Median(engineRuns.Zip(seqRuns[v], (e, s1) => 1 - s1 / e)) * 100:F1}%")));
foreach (var node in nodes)
{
    var status = node.App.Services.GetRequiredService<ModelHost>().Scheduler.Status;
    Console.WriteLine($"{Variant(node.Mixed)}: prompt tokens admitted {status.PromptTokens}, copied by prefix reuse {status.PrefixTokensReused} ({(double)status.PrefixTokensReused / Math.Max(1, status.PromptTokens):P1})");
}
foreach (var node in nodes)
{
    node.Load.Dispose();
    await node.App.StopAsync();
    await node.App.DisposeAsync();
}

static string WithTextForEveryToken(string source)
{
    var target = source + "-text";
    if (File.Exists(Path.Combine(target, "vocab.json"))) return target;
    Directory.CreateDirectory(target);
    foreach (var file in Directory.GetFiles(source))
    {
        var name = Path.GetFileName(file);
        if (name.StartsWith("tokenizer", StringComparison.Ordinal)) continue;
        File.Copy(file, Path.Combine(target, name), overwrite: true); // a copy: the checkpoint reader sizes files without following links
    }
    using var config = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(source, "config.json")));
    var vocabSize = config.RootElement.GetProperty("vocab_size").GetInt32();
    // GPT-2's byte → symbol map (bytes_to_unicode): printable Latin-1 bytes map to themselves, the rest to U+0100 + n.
    var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
    var n = 0;
    for (var b = 0; b < 256; b++)
    {
        var printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
        vocab[((char)(printable ? b : 256 + n++)).ToString()] = b;
    }
    for (var id = 256; id < vocabSize - 1; id++)
    {
        var letters = "";
        for (var v = id; v > 0; v /= 26) letters = (char)('a' + v % 26) + letters;
        vocab["\u0120w" + letters] = id; // \u0120 is the byte-level symbol of a space
    }
    vocab["<|endoftext|>"] = vocabSize - 1;
    File.WriteAllText(Path.Combine(target, "vocab.json"), System.Text.Json.JsonSerializer.Serialize(vocab));
    File.WriteAllText(Path.Combine(target, "merges.txt"), "#version: 0.2\n");
    return target;
}

/// <summary>One row of the in-process batch runs: its sequence, sampler and detokeniser.</summary>
sealed record BatchRow(Sequence Seq, TokenSampler Sampler, StreamingDecoder Detok)
{
    /// <summary>Samples the row's next token from its logits, records it, and makes it the row's pending token.</summary>
    public void Take(ReadOnlySpan<float> logits)
    {
        var next = Sampler.Sample(logits);
        Sampler.Accept(next);
        _ = Detok.Append(next);
        Seq.PendingToken = next;
    }
}
