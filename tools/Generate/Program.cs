using System.Diagnostics;
using System.Globalization;
using Serving.Checkpoints.Hub;
using Serving.Inference.Engine;
using Serving.Inference.Runtime;
using Serving.Inference.Sampling;
using Serving.Inference.Tokenization;

// Streams generated text from a Hugging Face checkpoint folder, or a model id (org/name[@revision]) in the local hub cache.
// usage: Serving.Generate <checkpoint-dir | org/name[@revision]> "<prompt>" [--max-tokens N] [--temperature T] [--top-k K] [--top-p P]
//        [--min-p P] [--repetition-penalty R] [--presence-penalty X] [--frequency-penalty X] [--seed S]
//        [--stop STR]... [--context N] [--threads N] [--cuda]
//        Serving.Generate <checkpoint-dir> --logits-json FILE --token-ids 1,2,3 [--cuda] [--fp16]: every position's logits
//        for the given token ids (one prefill), as JSON {"tokens": [...], "logits": [[...], ...]} (cross-checks against
//        transformers); --fp16 runs the blocks in fp16 (RuntimeOptions.Precision), --cuda on the CUDA provider
if (args.Length >= 3 && args[1] == "--logits-json")
{
    return DumpLogits(args);
}
if (args.Length < 2 || args[0] is "-h" or "--help")
{
    Console.Error.WriteLine("usage: Serving.Generate <checkpoint-dir | org/name[@revision]> \"<prompt>\" [--max-tokens 64] [--temperature 0.8] [--top-k 0] [--top-p 1] [--min-p 0]");
    Console.Error.WriteLine("       [--repetition-penalty 1] [--presence-penalty 0] [--frequency-penalty 0] [--seed N] [--stop STR]... [--context 512] [--threads N] [--cuda]");
    Console.Error.WriteLine("An existing path is a checkpoint folder; an org/name[@revision] that is not one is read from the Hugging Face cache");
    Console.Error.WriteLine("(HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub), never downloaded.");
    return 2;
}
var dir = args[0];
var prompt = args[1];
var p = new SamplingParameters { MaxTokens = 64, Temperature = 0.8f };
var stops = new List<string>();
int context = 512, threads = 0;
var cuda = false;
try
{
    for (var i = 2; i < args.Length; i++)
    {
        string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
        float F() => float.Parse(Next(), CultureInfo.InvariantCulture);
        p = args[i] switch
        {
            "--max-tokens" => p with { MaxTokens = int.Parse(Next(), CultureInfo.InvariantCulture) },
            "--temperature" => p with { Temperature = F() },
            "--top-k" => p with { TopK = int.Parse(Next(), CultureInfo.InvariantCulture) },
            "--top-p" => p with { TopP = F() },
            "--min-p" => p with { MinP = F() },
            "--repetition-penalty" => p with { RepetitionPenalty = F() },
            "--presence-penalty" => p with { PresencePenalty = F() },
            "--frequency-penalty" => p with { FrequencyPenalty = F() },
            "--seed" => p with { Seed = ulong.Parse(Next(), CultureInfo.InvariantCulture) },
            "--stop" => Add(stops, Next(), p),
            "--context" => Set(ref context, int.Parse(Next(), CultureInfo.InvariantCulture), p),
            "--threads" => Set(ref threads, int.Parse(Next(), CultureInfo.InvariantCulture), p),
            "--cuda" => Set(ref cuda, true, p),
            _ => throw new ArgumentException($"unknown option {args[i]}"),
        };
    }
    p = p with { StopStrings = stops };
    dir = CheckpointLocator.Locate(dir).Directory;

    using var model = DecoderModel.Load(dir, new RuntimeOptions
    {
        MaxBatch = 1, MaxContext = context, Threads = threads,
        ExecutionProvider = cuda ? ExecutionProviderKind.Cuda : ExecutionProviderKind.Cpu,
    });
    var tokenizer = TokenizerLoader.Load(dir, model.Config.VocabSize);
    p.Validate(model.Config.VocabSize);
    var promptIds = tokenizer.Encode(prompt, addBos: tokenizer.AddBosByDefault);
    if (promptIds.Length + p.MaxTokens > model.MaxContext)
    {
        throw new ArgumentException($"prompt ({promptIds.Length} tokens) + max tokens ({p.MaxTokens}) exceed the context of {model.MaxContext}");
    }
    using var decoder = new BatchDecoder(model, 1);
    var sampler = new TokenSampler(p, model.Config.VocabSize, promptIds);
    int[] eos = tokenizer.EosTokenId is { } e ? [e] : model.Config.EosTokenId is { } ce ? [ce] : [];
    var stop = new StopCriteria(p, eos);
    var matcher = new StopStringMatcher(p.StopStrings);
    var text = tokenizer.CreateStreamingDecoder(skipSpecialTokens: true);
    var output = Console.Out;

    var sw = Stopwatch.StartNew();
    var seq = decoder.TryAllocate()!;
    var logits = decoder.Prefill(seq, promptIds);
    var ttft = sw.Elapsed;
    FinishReason? finish = null;
    var generated = 0;
    while (finish is null)
    {
        var token = sampler.Sample(logits, out _);
        sampler.Accept(token);
        generated++;
        finish = stop.Check(token, generated);
        if (!stop.IsStopToken(token))
        {
            var piece = text.Append(token);
            if (matcher.Push(piece, out var emit))
            {
                finish = FinishReason.Stop;
            }
            output.Write(emit);
        }
        if (finish is not null) break;
        seq.PendingToken = token;
        logits = decoder.Decode();
    }
    if (!matcher.IsStopped)
    {
        // Bytes still pending in the detokeniser, then text held back as a possible stop-string prefix.
        matcher.Push(text.Flush(), out var tail);
        output.Write(tail);
        if (!matcher.IsStopped) output.Write(matcher.Flush());
    }
    output.WriteLine();
    var total = sw.Elapsed;
    Console.Error.WriteLine($"[{generated} tokens, finish={finish.Value.ToOpenAIString()}, prompt {promptIds.Length} tokens, " +
        $"first token {ttft.TotalMilliseconds:F0} ms, {(generated - 1) / Math.Max(1e-9, (total - ttft).TotalSeconds):F1} tok/s decode, seed {sampler.Seed}]");
    return 0;
}
catch (Exception ex) when (ex is ArgumentException or FormatException or IOException or SamplingParameterException
    or Serving.Checkpoints.ModelConfigException or Serving.Checkpoints.SafetensorsFormatException or TokenizerFormatException or NotSupportedException)
{
    Console.Error.WriteLine($"error: {ex.Message}");
    return 1;
}

static int DumpLogits(string[] args)
{
    var dir = args[0];
    var file = args[2];
    var ids = args.Length >= 5 && args[3] == "--token-ids"
        ? args[4].Split(',').Select(x => int.Parse(x, CultureInfo.InvariantCulture)).ToArray()
        : throw new ArgumentException("--logits-json needs --token-ids 1,2,3");
    var flags = args.Skip(5).ToHashSet();
    if (flags.Except(["--cuda", "--fp16"]).FirstOrDefault() is { } unknown) throw new ArgumentException($"unknown option {unknown} (--cuda, --fp16)");
    using var model = DecoderModel.Load(dir, new RuntimeOptions
    {
        MaxBatch = 1, MaxContext = Math.Max(ids.Length, 8),
        ExecutionProvider = flags.Contains("--cuda") ? ExecutionProviderKind.Cuda : ExecutionProviderKind.Cpu,
        Precision = flags.Contains("--fp16") ? ComputePrecision.Float16 : ComputePrecision.Float32,
    });
    using var decoder = new BatchDecoder(model, 1);
    var v = model.Config.VocabSize;
    var all = new float[ids.Length * v];
    decoder.Prefill(decoder.TryAllocate()!, ids, allLogits: all);
    var rows = new System.Text.Json.Nodes.JsonArray();
    for (var t = 0; t < ids.Length; t++) rows.Add(new System.Text.Json.Nodes.JsonArray(all.AsSpan(t * v, v).ToArray().Select(x => (System.Text.Json.Nodes.JsonNode?)x).ToArray()));
    var doc = new System.Text.Json.Nodes.JsonObject
    {
        ["tokens"] = new System.Text.Json.Nodes.JsonArray(ids.Select(x => (System.Text.Json.Nodes.JsonNode?)x).ToArray()),
        ["logits"] = rows,
    };
    File.WriteAllText(file, doc.ToJsonString());
    Console.Error.WriteLine($"wrote {ids.Length} × {v} logits to {file}");
    return 0;
}

static SamplingParameters Add(List<string> list, string value, SamplingParameters p)
{
    list.Add(value);
    return p;
}

static SamplingParameters Set<T>(ref T field, T value, SamplingParameters p)
{
    field = value;
    return p;
}
