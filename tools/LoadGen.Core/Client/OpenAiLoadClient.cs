using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Serving.LoadGen.Metrics;
using Serving.LoadGen.Workload;

namespace Serving.LoadGen.Client;

/// <summary>
/// Sends one trace request to an OpenAI-compatible server and records what happened, with a timestamp for
/// every content chunk. Never throws for a failed request: failures are records with an error kind.
/// </summary>
public sealed class OpenAiLoadClient : IRequestSender, IDisposable
{
    private const int MaxErrorBodyChars = 300;
    private static readonly string[] ContentFields = ["content", "reasoning_content", "reasoning"];
    private readonly HttpClient _http;
    private readonly ClientOptions _options;
    private readonly TimeProvider _time;
    private readonly Uri _url;

    /// <summary>Creates a client with its own connection pool.</summary>
    public OpenAiLoadClient(ClientOptions options, TimeProvider? time = null)
        : this(options, new SocketsHttpHandler
        {
            MaxConnectionsPerServer = int.MaxValue,
            EnableMultipleHttp2Connections = true,
            ConnectTimeout = options.Timeout,
            AutomaticDecompression = DecompressionMethods.None,
            UseProxy = false,
        }, time)
    {
    }

    /// <summary>
    /// Creates a client that sends through <paramref name="handler"/> (which it then owns), e.g. an in-memory
    /// <c>TestServer</c> handler so a benchmark can drive a server without sockets.
    /// </summary>
    public OpenAiLoadClient(ClientOptions options, HttpMessageHandler handler, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(handler);
        _options = options;
        _time = time ?? TimeProvider.System;
        _http = new HttpClient(handler, disposeHandler: true) { Timeout = System.Threading.Timeout.InfiniteTimeSpan };
        string root = options.BaseUrl.ToString();
        _url = new Uri(new Uri(root.EndsWith('/') ? root : root + "/"), RequestBody.PathFor(options.Endpoint));
    }

    /// <summary>The URL requests are posted to.</summary>
    public Uri Url => _url;

    /// <summary>Sends <paramref name="request"/>; timestamps are seconds since <paramref name="originTimestamp"/> (a <see cref="TimeProvider"/> timestamp).</summary>
    public async Task<RequestRecord> SendAsync(TraceRequest request, long originTimestamp, CancellationToken cancellationToken)
    {
        double Now() => _time.GetElapsedTime(originTimestamp).TotalSeconds;
        var chunks = new List<double>();
        double start = Now();
        RequestRecord Fail(string kind, string? detail) => new()
        {
            Id = request.Id,
            Adapter = request.Adapter,
            StartSeconds = start,
            EndSeconds = Now(),
            ChunkSeconds = chunks,
            Streamed = _options.Stream,
            PromptTokens = request.PromptTokens,
            OutputTokens = chunks.Count,
            Error = kind,
            ErrorDetail = detail,
        };

        using var message = new HttpRequestMessage(HttpMethod.Post, _url)
        {
            Version = _options.HttpVersion,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = new ByteArrayContent(RequestBody.Build(request, _options)),
        };
        message.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        // Lets a server's logs be matched with this tool's records.
        message.Headers.TryAddWithoutValidation("X-Request-Id", "loadgen-" + request.Id.ToString(System.Globalization.CultureInfo.InvariantCulture));
        if (!string.IsNullOrEmpty(_options.ApiKey))
        {
            message.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _options.ApiKey);
        }

        // The timeout starts with the measurement, so a timed-out request's E2E is the timeout.
        using var timeout = new CancellationTokenSource(_options.Timeout, _time);
        start = Now();
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
        CancellationToken ct = linked.Token;
        try
        {
            using HttpResponseMessage response = await _http.SendAsync(message, HttpCompletionOption.ResponseHeadersRead, ct).ConfigureAwait(false);
            if (!response.IsSuccessStatusCode)
            {
                string body = await ReadPrefixAsync(response, ct).ConfigureAwait(false);
                return Fail(ErrorKinds.Http((int)response.StatusCode), body) with { RetryAfter = RetryAfterOf(response) };
            }

            await using Stream stream = await response.Content.ReadAsStreamAsync(ct).ConfigureAwait(false);
            ResponseTokens tokens = _options.Stream
                ? await ReadStreamAsync(stream, chunks, Now, ct).ConfigureAwait(false)
                : await ReadWholeAsync(stream, ct).ConfigureAwait(false);
            if (tokens.Error is not null)
            {
                return Fail(ErrorKinds.MalformedStream, tokens.Error);
            }

            return new RequestRecord
            {
                Id = request.Id,
                Adapter = request.Adapter,
                StartSeconds = start,
                EndSeconds = Now(),
                ChunkSeconds = chunks,
                Streamed = _options.Stream,
                PromptTokens = tokens.PromptTokens ?? request.PromptTokens,
                OutputTokens = tokens.CompletionTokens ?? tokens.Counted,
                UsageReported = tokens.CompletionTokens is not null,
            };
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            return Fail(ErrorKinds.Cancelled, "run cancelled");
        }
        catch (OperationCanceledException) when (timeout.IsCancellationRequested)
        {
            return Fail(ErrorKinds.Timeout, $"no complete response within {_options.Timeout.TotalSeconds:0.###} s");
        }
        catch (Exception ex) when (ex is HttpRequestException or IOException)
        {
            return Fail(ErrorKinds.Connection, ex.Message);
        }
        catch (Exception ex) when (ex is JsonException or InvalidOperationException or FormatException)
        {
            return Fail(ErrorKinds.MalformedStream, ex.Message);
        }
    }

    /// <inheritdoc />
    public void Dispose() => _http.Dispose();

    private async Task<ResponseTokens> ReadStreamAsync(Stream stream, List<double> chunks, Func<double> now, CancellationToken ct)
    {
        using var reader = new StreamReader(stream, Encoding.UTF8);
        var tokens = new ResponseTokens();
        string? line;
        while ((line = await reader.ReadLineAsync(ct).ConfigureAwait(false)) is not null)
        {
            double at = now();
            if (line.Length == 0 || line[0] == ':' || !line.StartsWith("data:", StringComparison.Ordinal))
            {
                continue; // blank separators, comments and other SSE fields carry no tokens
            }

            ReadOnlySpan<char> payload = line.AsSpan(5).Trim();
            if (payload.SequenceEqual("[DONE]"))
            {
                return tokens;
            }

            using JsonDocument doc = JsonDocument.Parse(payload.ToString());
            JsonElement root = doc.RootElement;
            if (root.TryGetProperty("error", out JsonElement error))
            {
                return tokens with { Error = "error in stream: " + Truncate(error.ToString()) };
            }

            ReadUsage(root, ref tokens);
            if (root.TryGetProperty("choices", out JsonElement choices) && choices.ValueKind == JsonValueKind.Array)
            {
                foreach (JsonElement choice in choices.EnumerateArray())
                {
                    if (!string.IsNullOrEmpty(ContentOf(choice, streaming: true)))
                    {
                        chunks.Add(at);
                        tokens = tokens with { Counted = tokens.Counted + 1 };
                        break;
                    }
                }
            }
            else if (!root.TryGetProperty("usage", out _))
            {
                return tokens with { Error = "chunk without choices: " + Truncate(payload.ToString()) };
            }
        }

        return tokens with { Error = "stream ended without data: [DONE]" };
    }

    private async Task<ResponseTokens> ReadWholeAsync(Stream stream, CancellationToken ct)
    {
        using JsonDocument doc = await JsonDocument.ParseAsync(stream, cancellationToken: ct).ConfigureAwait(false);
        JsonElement root = doc.RootElement;
        var tokens = new ResponseTokens();
        if (root.TryGetProperty("error", out JsonElement error))
        {
            return tokens with { Error = "error object: " + Truncate(error.ToString()) };
        }

        if (!root.TryGetProperty("choices", out JsonElement choices) || choices.ValueKind != JsonValueKind.Array || choices.GetArrayLength() == 0)
        {
            return tokens with { Error = "response without choices" };
        }

        ReadUsage(root, ref tokens);
        string text = ContentOf(choices[0], streaming: false) ?? string.Empty;
        return tokens with { Counted = PromptSynthesizer.EstimateTokens(text) };
    }

    private string? ContentOf(JsonElement choice, bool streaming)
    {
        if (_options.Endpoint == ApiEndpoint.Completions)
        {
            return choice.TryGetProperty("text", out JsonElement text) && text.ValueKind == JsonValueKind.String ? text.GetString() : null;
        }

        if (!choice.TryGetProperty(streaming ? "delta" : "message", out JsonElement m) || m.ValueKind != JsonValueKind.Object)
        {
            return null;
        }

        // Reasoning models stream their reasoning before the answer; those are output tokens too (as vLLM counts them).
        foreach (string field in ContentFields)
        {
            if (m.TryGetProperty(field, out JsonElement content) && content.ValueKind == JsonValueKind.String && content.GetString() is { Length: > 0 } text)
            {
                return text;
            }
        }

        return null;
    }

    private static void ReadUsage(JsonElement root, ref ResponseTokens tokens)
    {
        if (root.TryGetProperty("usage", out JsonElement usage) && usage.ValueKind == JsonValueKind.Object)
        {
            if (usage.TryGetProperty("completion_tokens", out JsonElement c) && c.ValueKind == JsonValueKind.Number)
            {
                tokens = tokens with { CompletionTokens = c.GetInt32() };
            }

            if (usage.TryGetProperty("prompt_tokens", out JsonElement p) && p.ValueKind == JsonValueKind.Number)
            {
                tokens = tokens with { PromptTokens = p.GetInt32() };
            }
        }
    }

    private static async Task<string> ReadPrefixAsync(HttpResponseMessage response, CancellationToken ct)
    {
        try
        {
            string body = await response.Content.ReadAsStringAsync(ct).ConfigureAwait(false);
            return $"{(int)response.StatusCode} {response.ReasonPhrase}: {Truncate(body)}";
        }
        catch (Exception ex) when (ex is HttpRequestException or IOException)
        {
            return $"{(int)response.StatusCode} {response.ReasonPhrase}";
        }
    }

    /// <summary>The raw <c>Retry-After</c> header (seconds or an HTTP date), null when the response has none.</summary>
    private static string? RetryAfterOf(HttpResponseMessage response) =>
        response.Headers.TryGetValues("Retry-After", out IEnumerable<string>? values) ? string.Join(",", values) : null;

    private static string Truncate(string s) => s.Length <= MaxErrorBodyChars ? s : s[..MaxErrorBodyChars] + "…";

    private readonly record struct ResponseTokens(int Counted, int? CompletionTokens, int? PromptTokens, string? Error);
}
