using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
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

// Node throughput: aggregate output tokens/s of streaming HTTP clients at several concurrencies against the same
// requests sent one after another, and the HTTP + scheduling overhead against driving the engine in-process
// (batch 1, same sampler) for the same requests. Greedy, ignore_eos, fixed lengths, so every run generates the same tokens.
// usage: NodeBench [--shape gpt2-small] [--levels 1,8,32] [--tokens 32] [--prompt 16] [--sequential 8] [--threads N] [--reps 2]
var opts = args.Select((a, i) => (a, i)).Where(p => p.a.StartsWith("--", StringComparison.Ordinal))
    .ToDictionary(p => p.a[2..], p => p.i + 1 < args.Length ? args[p.i + 1] : "");
string Opt(string k, string d) => opts.TryGetValue(k, out var v) ? v : d;
var inv = CultureInfo.InvariantCulture;
var shape = Opt("shape", "gpt2-small");
var levels = Opt("levels", "1,8,32").Split(',').Select(int.Parse).ToArray();
int tokens = int.Parse(Opt("tokens", "32"), inv), promptLen = int.Parse(Opt("prompt", "16"), inv);
int sequential = int.Parse(Opt("sequential", "8"), inv), reps = int.Parse(Opt("reps", "2"), inv);
var threads = int.Parse(Opt("threads", Environment.ProcessorCount.ToString(inv)), inv);
var maxBatch = levels.Max();
var context = promptLen + tokens + 8;

var dir = Path.GetFullPath(Path.Combine(".fixtures", shape));
if (!File.Exists(Path.Combine(dir, "model.safetensors")))
{
    Console.WriteLine($"writing random {shape} checkpoint to {dir}");
    FixtureCheckpoint.Write(dir, FixtureShape.Named(shape));
}
// Byte-tokenizer prompts of exactly promptLen tokens, different per request.
string Prompt(int i) => string.Concat(Enumerable.Range(0, promptLen).Select(k => (char)('a' + (i * 7 + k * 3) % 26)));

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
            var next = sampler.Sample(logits, out _);
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

Console.WriteLine($"{shape}, {threads} threads, prompt {promptLen}, {tokens} output tokens per request, load average {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");

// 2. The node on loopback.
var builder = WebApplication.CreateBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
{
    ["Node:ModelPath"] = dir, ["Node:ModelId"] = "bench", ["Node:Host"] = "127.0.0.1", ["Node:Port"] = "0",
    ["Node:MaxBatch"] = maxBatch.ToString(inv), ["Node:MaxContext"] = context.ToString(inv), ["Node:Threads"] = threads.ToString(inv),
    ["Node:MaxQueue"] = "1024", ["Serilog:MinimumLevel:Default"] = "Warning",
});
builder.AddNodeDefaults();
builder.Services.AddInferenceNode();
await using var app = builder.Build();
app.MapNodeDefaults();
app.MapOpenAIApi();
app.MapNodeStatusApi();
await app.StartAsync();
var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
using var http = new HttpClient { BaseAddress = new Uri(address + "/"), Timeout = TimeSpan.FromMinutes(30) };

async Task<int> StreamAsync(int i)
{
    var body = new { model = "bench", prompt = Prompt(i), max_tokens = tokens, temperature = 0, ignore_eos = true, stream = true, stream_options = new { include_usage = true } };
    using var request = new HttpRequestMessage(HttpMethod.Post, "v1/completions") { Content = JsonContent.Create(body) };
    using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
    response.EnsureSuccessStatusCode();
    using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
    var completion = 0;
    while (await reader.ReadLineAsync() is { } line)
    {
        if (!line.StartsWith("data: {", StringComparison.Ordinal)) continue;
        var usage = JsonNode.Parse(line[6..])!["usage"];
        if (usage is not null) completion = (int)usage["completion_tokens"]!;
    }
    if (completion != tokens) throw new InvalidOperationException($"expected {tokens} tokens, got {completion}");
    return completion;
}

async Task<double> SequentialAsync()
{
    var sw = Stopwatch.StartNew();
    var total = 0;
    for (var i = 0; i < sequential; i++) total += await StreamAsync(1000 + i);
    return total / sw.Elapsed.TotalSeconds;
}

async Task<double> ConcurrentAsync(int c)
{
    var sw = Stopwatch.StartNew();
    var counts = await Task.WhenAll(Enumerable.Range(0, c).Select(i => Task.Run(() => StreamAsync(2000 + i))));
    return counts.Sum() / sw.Elapsed.TotalSeconds;
}

// Runs alternate (engine, node sequential, node at each concurrency) so that a shared machine's load hits all alike;
// ratios are taken within a repetition and the median over repetitions is reported.
await StreamAsync(999); // warm-up
foreach (var c in levels.Where(l => l > 1)) await ConcurrentAsync(c);
var engineRuns = new List<double>();
var seqRuns = new List<double>();
var concRuns = levels.Where(l => l > 1).ToDictionary(c => c, _ => new List<double>());
for (var r = 0; r < reps; r++)
{
    var e = EngineTokensPerSecond();
    var s1 = await SequentialAsync();
    engineRuns.Add(e);
    seqRuns.Add(s1);
    var line = $"rep {r}: engine {e:F1}, node sequential {s1:F1} ({(1 - s1 / e) * 100:F1}% overhead)";
    foreach (var c in concRuns.Keys)
    {
        var v = await ConcurrentAsync(c);
        concRuns[c].Add(v);
        line += $", concurrency {c}: {v:F1} ({v / s1:F2}×)";
    }
    Console.WriteLine(line);
}
static double Median(IEnumerable<double> v)
{
    var a = v.OrderBy(x => x).ToArray();
    return a.Length % 2 == 1 ? a[a.Length / 2] : (a[a.Length / 2 - 1] + a[a.Length / 2]) / 2;
}
var overhead = Median(engineRuns.Zip(seqRuns, (e, s1) => 1 - s1 / e));
Console.WriteLine();
Console.WriteLine("| concurrency | aggregate output tok/s (median) | vs sequential (median of per-rep ratios) |");
Console.WriteLine("|---|---|---|");
Console.WriteLine($"| 1 (one after another) | {Median(seqRuns):F1} | 1.00× |");
foreach (var (c, runs) in concRuns)
{
    Console.WriteLine($"| {c} | {Median(runs):F1} | {Median(runs.Zip(seqRuns, (v, s1) => v / s1)):F2}× |");
}
Console.WriteLine($"engine in-process batch 1: {Median(engineRuns):F1} tok/s; node at concurrency 1: {Median(seqRuns):F1} tok/s; " +
    $"HTTP + scheduling overhead (median of per-rep ratios) {overhead * 100:F1}%");
await app.StopAsync();
