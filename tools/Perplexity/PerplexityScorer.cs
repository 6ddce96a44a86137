using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Serving.Perplexity;

/// <summary>How <see cref="PerplexityScorer"/> asks.</summary>
public sealed record ScorerOptions
{
    /// <summary>Context sent before every chunk and not scored (e.g. the demo model's <c>&lt;|endoftext|&gt;</c>); default none.</summary>
    public string Prefix { get; init; } = "";

    /// <summary>Requests in flight at once (the node batches them); default 4.</summary>
    public int Parallel { get; init; } = 4;

    /// <summary>Retries of a request answered 429 or 503 (after its Retry-After, else 1 s); default 20.</summary>
    public int MaxRetries { get; init; } = 20;
}

/// <summary>One model's score of a text: how many documents (chunks), the sum of the scored tokens' logprobs and their count.</summary>
public sealed record PerplexityResult(string Model, int Documents, long Tokens, double LogprobSum)
{
    /// <summary>Mean negative log-likelihood per token (nats): the loss.</summary>
    public double MeanNll => Tokens == 0 ? double.NaN : -LogprobSum / Tokens;

    /// <summary>exp(<see cref="MeanNll"/>).</summary>
    public double Perplexity => Math.Exp(MeanNll);
}

/// <summary>A refusal or failure the scorer cannot work around (the server's message included).</summary>
public sealed class PerplexityException(string message) : Exception(message);

/// <summary>
/// Scores text through an OpenAI-compatible server as lm-evaluation-harness does: <c>POST /v1/completions</c> with
/// <c>echo: true</c>, <c>max_tokens: 0</c> and <c>logprobs: 0</c> returns every prompt token's logprob (the first
/// token of a prompt has none). Two ways to cut a document into requests:
/// <list type="bullet">
/// <item>by tokens (<see cref="ScoreTokensAsync"/>): the caller tokenizes with the model's tokenizer and the ids are
/// sent in windows that fit the model's context (<see cref="TokenWindows"/>); every token after the context prefix is
/// scored exactly once;</item>
/// <item>by text (<see cref="ScoreAsync"/>), for a server whose tokenizer the caller does not have: each chunk is sent as
/// <see cref="ScorerOptions.Prefix"/> + chunk; tokens that start inside the prefix (by <c>text_offset</c>) are context;
/// a chunk longer than the context (a 400 on <c>prompt</c>) is split in two at a line break or space and both halves
/// are scored.</item>
/// </list>
/// </summary>
public sealed class PerplexityScorer(HttpClient http, ScorerOptions? options = null)
{
    private readonly ScorerOptions _options = options ?? new ScorerOptions();

    /// <summary>The model's context length as the server reports it (<c>max_model_len</c> of <c>GET /v1/models/{model}</c>), null when it does not.</summary>
    public async Task<int?> ContextLengthAsync(string model, CancellationToken cancellationToken = default)
    {
        using var response = await http.GetAsync("v1/models/" + model, cancellationToken).ConfigureAwait(false);
        var text = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
        if (!response.IsSuccessStatusCode) throw new PerplexityException($"{model}: GET /v1/models/{model}: HTTP {(int)response.StatusCode}: {Error(text).Message}");
        using var doc = JsonDocument.Parse(text);
        return doc.RootElement.TryGetProperty("max_model_len", out var m) && m.TryGetInt32(out var n) && n > 1 ? n : null;
    }

    /// <summary>
    /// Scores documents given as token ids: each in <see cref="TokenWindows.Plan"/>'s windows of at most
    /// <paramref name="maxTokens"/> ids, its first <paramref name="contextTokens"/> ids context only.
    /// </summary>
    public async Task<PerplexityResult> ScoreTokensAsync(string model, IReadOnlyList<int[]> documents, int contextTokens, int maxTokens, int overlap,
        CancellationToken cancellationToken = default)
    {
        var requests = new List<(int Doc, TokenWindow Window)>();
        for (var d = 0; d < documents.Count; d++)
        {
            foreach (var w in TokenWindows.Plan(documents[d].Length, contextTokens, maxTokens, overlap)) requests.Add((d, w));
        }
        var parts = new (long Tokens, double Sum)[requests.Count];
        await Parallel.ForEachAsync(Enumerable.Range(0, requests.Count),
            new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, _options.Parallel), CancellationToken = cancellationToken },
            async (i, ct) =>
            {
                var (d, w) = requests[i];
                parts[i] = await ScoreWindowAsync(model, documents[d].AsMemory(w.Start, w.Length), w.ScoredFrom - w.Start, ct).ConfigureAwait(false);
            }).ConfigureAwait(false);
        return Total(model, documents.Count, parts);
    }

    /// <summary>One window: <paramref name="ids"/> sent as the prompt, its logprobs from index <paramref name="scoredFrom"/> on summed.</summary>
    private async Task<(long Tokens, double Sum)> ScoreWindowAsync(string model, ReadOnlyMemory<int> ids, int scoredFrom, CancellationToken cancellationToken)
    {
        var prompt = new JsonArray();
        foreach (var id in ids.Span) prompt.Add(id);
        var text = await PostAsync(model, prompt, cancellationToken).ConfigureAwait(false)
            ?? throw new PerplexityException($"{model}: a window of {ids.Length} tokens does not fit the model's context; pass a smaller --context.");
        using var doc = JsonDocument.Parse(text);
        var logprobs = Logprobs(doc.RootElement, model, text).GetProperty("token_logprobs");
        if (logprobs.GetArrayLength() != ids.Length)
        {
            throw new PerplexityException($"{model}: sent {ids.Length} prompt tokens, got {logprobs.GetArrayLength()} logprobs back.");
        }
        long tokens = 0;
        double sum = 0;
        for (var i = scoredFrom; i < ids.Length; i++)
        {
            if (logprobs[i].ValueKind != JsonValueKind.Number) throw new PerplexityException($"{model}: prompt token {i} has no logprob.");
            sum += logprobs[i].GetDouble();
            tokens++;
        }
        return (tokens, sum);
    }

    /// <summary>Scores every chunk of text with <paramref name="model"/>.</summary>
    public async Task<PerplexityResult> ScoreAsync(string model, IReadOnlyList<string> chunks, CancellationToken cancellationToken = default)
    {
        var parts = new (long Tokens, double Sum)[chunks.Count];
        await Parallel.ForEachAsync(Enumerable.Range(0, chunks.Count),
            new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, _options.Parallel), CancellationToken = cancellationToken },
            async (i, ct) => parts[i] = await ScoreChunkAsync(model, chunks[i], ct).ConfigureAwait(false)).ConfigureAwait(false);
        return Total(model, chunks.Count, parts);
    }

    private static PerplexityResult Total(string model, int documents, (long Tokens, double Sum)[] parts)
    {
        long tokens = 0;
        double sum = 0;
        foreach (var (t, s) in parts)
        {
            tokens += t;
            sum += s;
        }
        return new PerplexityResult(model, documents, tokens, sum);
    }

    /// <summary>The scored tokens of one chunk of text: their count and the sum of their logprobs.</summary>
    public async Task<(long Tokens, double Sum)> ScoreChunkAsync(string model, string chunk, CancellationToken cancellationToken = default)
    {
        var text = await PostAsync(model, JsonValue.Create(_options.Prefix + chunk), cancellationToken).ConfigureAwait(false);
        if (text is not null) return SumAfterPrefix(text, _options.Prefix.Length, model);
        if (!TextChunks.TryHalve(chunk, out var first, out var second))
        {
            throw new PerplexityException($"{model}: the prefix alone does not fit the model's context.");
        }
        var a = await ScoreChunkAsync(model, first, cancellationToken).ConfigureAwait(false);
        var b = await ScoreChunkAsync(model, second, cancellationToken).ConfigureAwait(false);
        return (a.Tokens + b.Tokens, a.Sum + b.Sum);
    }

    /// <summary>
    /// The response body of a scoring request; null when the server refused the prompt as too long (a 400 on
    /// <c>prompt</c>). 429 and 503 are retried after their Retry-After (else 1 s); every other failure throws.
    /// </summary>
    private async Task<string?> PostAsync(string model, JsonNode prompt, CancellationToken cancellationToken)
    {
        var body = new JsonObject
        {
            ["model"] = model, ["prompt"] = prompt, ["max_tokens"] = 0, ["echo"] = true, ["logprobs"] = 0, ["temperature"] = 0,
        };
        for (var attempt = 0; ; attempt++)
        {
            using var response = await http.PostAsJsonAsync("v1/completions", body, cancellationToken).ConfigureAwait(false);
            var text = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
            if (response.IsSuccessStatusCode) return text;
            var (message, param) = Error(text);
            if (response.StatusCode is HttpStatusCode.TooManyRequests or HttpStatusCode.ServiceUnavailable && attempt < _options.MaxRetries)
            {
                var wait = response.Headers.RetryAfter?.Delta ?? TimeSpan.FromSeconds(1);
                await Task.Delay(wait, cancellationToken).ConfigureAwait(false);
                continue;
            }
            if (response.StatusCode == HttpStatusCode.BadRequest && param == "prompt") return null;
            throw new PerplexityException($"{model}: HTTP {(int)response.StatusCode}: {message}");
        }
    }

    private static JsonElement Logprobs(JsonElement root, string model, string json)
    {
        if (!root.TryGetProperty("choices", out var choices) || choices.GetArrayLength() == 0
            || !choices[0].TryGetProperty("logprobs", out var lp) || lp.ValueKind != JsonValueKind.Object)
        {
            throw new PerplexityException($"{model}: the response has no logprobs; does the server support echo with logprobs? {Truncate(json)}");
        }
        return lp;
    }

    private static (long Tokens, double Sum) SumAfterPrefix(string json, int prefixLength, string model)
    {
        using var doc = JsonDocument.Parse(json);
        var lp = Logprobs(doc.RootElement, model, json);
        var logprobs = lp.GetProperty("token_logprobs");
        var offsets = lp.GetProperty("text_offset");
        long tokens = 0;
        double sum = 0;
        for (var i = 0; i < logprobs.GetArrayLength(); i++)
        {
            if (logprobs[i].ValueKind != JsonValueKind.Number || offsets[i].GetInt32() < prefixLength) continue;
            sum += logprobs[i].GetDouble();
            tokens++;
        }
        return (tokens, sum);
    }

    private static (string Message, string? Param) Error(string json)
    {
        try
        {
            using var doc = JsonDocument.Parse(json);
            var e = doc.RootElement.GetProperty("error");
            var param = e.TryGetProperty("param", out var p) && p.ValueKind == JsonValueKind.String ? p.GetString() : null;
            return (e.GetProperty("message").GetString() ?? "", param);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            return (Truncate(json), null);
        }
    }

    private static string Truncate(string s) => s.Length <= 300 ? s : s[..300] + "…";
}
