namespace Serving.LoadGen.Metrics;

/// <summary>
/// What the client observed for one request: timestamps in seconds from the start of the run, token
/// counts, and how it ended. The only input of <see cref="MetricsCalculator"/>.
/// </summary>
public sealed record RequestRecord
{
    /// <summary>Trace id of the request.</summary>
    public required int Id { get; init; }

    /// <summary>Adapter name, or null for the base model.</summary>
    public string? Adapter { get; init; }

    /// <summary>When the request was sent.</summary>
    public required double StartSeconds { get; init; }

    /// <summary>When the response ended (last byte, error or timeout).</summary>
    public required double EndSeconds { get; init; }

    /// <summary>Arrival time of each streamed chunk that carried content, in order; empty when not streamed.</summary>
    public IReadOnlyList<double> ChunkSeconds { get; init; } = [];

    /// <summary>Whether the response was streamed (TTFT, TPOT and ITL are defined only then).</summary>
    public bool Streamed { get; init; } = true;

    /// <summary>Prompt tokens: the server's usage when reported, else the trace's estimate.</summary>
    public int PromptTokens { get; init; }

    /// <summary>Output tokens: the server's usage when reported, else the number of content chunks.</summary>
    public int OutputTokens { get; init; }

    /// <summary>Whether token counts came from the server's usage object.</summary>
    public bool UsageReported { get; init; }

    /// <summary>Null on success, else an error kind (see <see cref="ErrorKinds"/>).</summary>
    public string? Error { get; init; }

    /// <summary>A short human-readable detail of the error, if any.</summary>
    public string? ErrorDetail { get; init; }

    /// <summary>The <c>Retry-After</c> header of an HTTP error response, as sent; null when absent (or no HTTP error).</summary>
    public string? RetryAfter { get; init; }

    /// <summary>True for a 429 or 503 answer: the server refused the request for load (or rate) and may say when to retry.</summary>
    public bool Refused => Error is "http_429" or "http_503";

    /// <summary>True when the request succeeded.</summary>
    public bool Succeeded => Error is null;

    /// <summary>Time to first token in seconds (streamed successes with at least one chunk).</summary>
    public double? TtftSeconds => Streamed && ChunkSeconds.Count > 0 ? ChunkSeconds[0] - StartSeconds : null;

    /// <summary>End-to-end latency in seconds.</summary>
    public double E2eSeconds => EndSeconds - StartSeconds;
}

/// <summary>Stable names of error kinds; HTTP errors are "http_" + status code.</summary>
public static class ErrorKinds
{
    /// <summary>The per-request timeout expired.</summary>
    public const string Timeout = "timeout";

    /// <summary>Connecting, sending or receiving failed at the transport level.</summary>
    public const string Connection = "connection";

    /// <summary>The response was not a valid OpenAI (SSE) response, or carried an error object mid-stream.</summary>
    public const string MalformedStream = "malformed_stream";

    /// <summary>The run was cancelled (Ctrl+C or end of duration) while the request was in flight; not counted as an error.</summary>
    public const string Cancelled = "cancelled";

    /// <summary>The kind for an HTTP status code.</summary>
    public static string Http(int status) => "http_" + status.ToString(System.Globalization.CultureInfo.InvariantCulture);
}
