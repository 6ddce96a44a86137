using System.Globalization;
using System.Net.Http.Headers;
using Serving.Checkpoints;
using Serving.Inference.Tokenization;
using Serving.Perplexity;

// Perplexity of a text file through the OpenAI-compatible API (gateway or node), for a list of models.
const string Usage = """
    usage: Serving.Perplexity --file FILE --models demo,demo:public/german [--url http://127.0.0.1:8080] [--key sk-...]
           [--prefix "<|endoftext|>"] [--tokenizer DIR [--context N] [--overlap N] | --max-chars N] [--parallel 4]

    FILE: a .jsonl file (the "text" of each line is a document, e.g. models/demo/eval/german.test.jsonl) or a text
    file (each paragraph, separated by blank lines, is a document). Every document is scored by every model with
    POST /v1/completions {"prompt": prefix + document, "echo": true, "max_tokens": 0, "logprobs": 0}: the prefix is
    context, not scored; the first token of a prompt has no logprob.

    --tokenizer DIR  the model's folder (tokenizer files + config.json; or org/name, a model id in the local Hugging Face
                     cache): documents are tokenized here and sent as token
                     ids, cut by tokens into windows that fit the context (--context, default: the server's
                     max_model_len, else config.json's); each later window repeats --overlap tokens as context
                     (default half the window). Every model scores exactly the same tokens.
    without it       documents are sent as text; one longer than --max-chars characters (default 2000) is cut at line
                     breaks into chunks of at most that; a chunk the server refuses as longer than its context is
                     halved until it fits.

    Prints, per model, the scored tokens, the loss (mean negative log-likelihood per token, nats), the perplexity
    exp(loss), and the change against the first model.
    """;
string url = "http://127.0.0.1:8080", prefix = "";
string? key = null, file = null, tokenizerDir = null;
var models = new List<string>();
int maxChars = 2000, parallel = 4;
int? context = null, overlap = null;
try
{
    for (var i = 0; i < args.Length; i++)
    {
        string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
        int Int() => int.TryParse(Next(), CultureInfo.InvariantCulture, out var v) && v > 0 ? v : throw new ArgumentException($"{args[i - 1]} takes a positive integer");
        switch (args[i])
        {
            case "--url": url = Next(); break;
            case "--key": key = Next(); break;
            case "--file": file = Next(); break;
            case "--models": models.AddRange(Next().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)); break;
            case "--prefix": prefix = Next(); break;
            case "--tokenizer": tokenizerDir = Next(); break;
            case "--context": context = Int(); break;
            case "--overlap": overlap = Int(); break;
            case "--max-chars": maxChars = Int(); break;
            case "--parallel": parallel = Int(); break;
            case "-h" or "--help": Console.WriteLine(Usage); return 0;
            default: throw new ArgumentException($"unknown option {args[i]}");
        }
    }
    if (file is null || models.Count == 0) throw new ArgumentException("--file and --models are required");
    if (tokenizerDir is null && (context is not null || overlap is not null)) throw new ArgumentException("--context and --overlap need --tokenizer");
    try
    {
        // Files may be links (the forge's splits, a Hugging Face cache); --tokenizer may be a model id in the local cache.
        if (!LinkedFiles.Exists(file)) throw new ArgumentException($"no file {file}");
        if (tokenizerDir is not null) tokenizerDir = Serving.Checkpoints.Hub.CheckpointLocator.Locate(tokenizerDir).Directory;
        if (tokenizerDir is not null && !LinkedFiles.Exists(Path.Combine(tokenizerDir, "config.json"))) throw new ArgumentException($"--tokenizer: no config.json in {tokenizerDir}");
    }
    catch (IOException e) // a dangling link, a model id missing from the cache: each message names the path
    {
        throw new ArgumentException(e.Message, e);
    }
}
catch (ArgumentException e)
{
    Console.Error.WriteLine(e.Message);
    Console.Error.WriteLine(Usage);
    return 2;
}

List<string> documents;
try
{
    documents = Documents.Read(file);
}
catch (FormatException e)
{
    Console.Error.WriteLine(e.Message);
    return 2;
}
if (documents.Count == 0)
{
    Console.Error.WriteLine($"{file} holds no text");
    return 2;
}
using var http = new HttpClient { BaseAddress = new Uri(url.TrimEnd('/') + "/"), Timeout = TimeSpan.FromMinutes(5) };
if (key is not null) http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
var scorer = new PerplexityScorer(http, new ScorerOptions { Prefix = prefix, Parallel = parallel });

var results = new List<PerplexityResult>();
string how;
try
{
    if (tokenizerDir is not null)
    {
        var config = ModelConfig.Load(Path.Combine(tokenizerDir, "config.json"));
        var tokenizer = TokenizerLoader.Load(tokenizerDir, config.VocabSize);
        var head = tokenizer.Encode(prefix, tokenizer.AddBosByDefault);
        var ids = documents.Select(d => (int[])[.. head, .. tokenizer.Encode(d)]).ToList();
        // The server keeps one position for output: a prompt holds at most context − 1 tokens.
        var length = context ?? await scorer.ContextLengthAsync(models[0]) ?? config.MaxPositions;
        var window = length - 1;
        var stride = overlap ?? window / 2;
        if (window < 2 || stride >= window) throw new PerplexityException($"--overlap {stride} must be below the window of {window} tokens (context {length})");
        var requests = ids.Sum(d => TokenWindows.Plan(d.Length, head.Length, window, stride).Count);
        how = $"by tokens ({tokenizer.Name}): context {length}, windows of ≤ {window} tokens, overlap {stride}; {requests} requests per model";
        foreach (var model in models) results.Add(await scorer.ScoreTokensAsync(model, ids, head.Length, window, stride));
    }
    else
    {
        var chunks = Documents.Chunks(documents, maxChars);
        how = $"by text: {chunks.Count} chunks of ≤ {maxChars} characters (halved when over the context)";
        foreach (var model in models) results.Add(await scorer.ScoreAsync(model, chunks));
    }
}
catch (Exception e) when (e is PerplexityException or HttpRequestException or TaskCanceledException or ModelConfigException or TokenizerFormatException)
{
    Console.Error.WriteLine(e.Message);
    return 1;
}

static string F(double v, string format) => v.ToString(format, CultureInfo.InvariantCulture);
var width = Math.Max(5, results.Max(r => r.Model.Length));
Console.WriteLine($"{file}: {documents.Count} documents via {url}, prefix {(prefix.Length == 0 ? "none" : $"\"{prefix}\"")}; {how}");
Console.WriteLine($"| {"model".PadRight(width)} | {"tokens",7} | {"loss",6} | {"perplexity",10} | vs {results[0].Model} |");
Console.WriteLine($"|{new string('-', width + 2)}|---------|--------|------------|---|");
foreach (var r in results)
{
    var delta = r == results[0] ? "" : $"loss {F(r.MeanNll - results[0].MeanNll, "+0.000;-0.000")}, perplexity ×{F(r.Perplexity / results[0].Perplexity, "0.000")}";
    Console.WriteLine($"| {r.Model.PadRight(width)} | {r.Tokens,7} | {F(r.MeanNll, "0.000"),6} | {F(r.Perplexity, "0.00"),10} | {delta} |");
}
return 0;
