namespace Serving.LoadGen.Client;

/// <summary>Which OpenAI route to call.</summary>
public enum ApiEndpoint
{
    /// <summary>POST /v1/chat/completions with one user message.</summary>
    Chat,
    /// <summary>POST /v1/completions with a prompt string.</summary>
    Completions,
}

/// <summary>How the client talks to the server.</summary>
public sealed record ClientOptions
{
    /// <summary>Server root, e.g. http://127.0.0.1:8000 (the /v1/... path is appended).</summary>
    public Uri BaseUrl { get; init; } = new("http://127.0.0.1:8000");

    /// <summary>Route to call.</summary>
    public ApiEndpoint Endpoint { get; init; } = ApiEndpoint.Chat;

    /// <summary>Base model name; a request with adapter A sends model "base:A".</summary>
    public string BaseModel { get; init; } = "base";

    /// <summary>Send the adapter name alone as the model (vLLM's convention for LoRA modules) instead of "base:adapter".</summary>
    public bool AdapterAsModel { get; init; }

    /// <summary>Bearer token, if the server needs one.</summary>
    public string? ApiKey { get; init; }

    /// <summary>HTTP version: 1.1 or 2.0 (plain http uses HTTP/2 with prior knowledge, h2c).</summary>
    public Version HttpVersion { get; init; } = System.Net.HttpVersion.Version11;

    /// <summary>Stream with SSE (needed for TTFT, TPOT and ITL).</summary>
    public bool Stream { get; init; } = true;

    /// <summary>Per-request timeout, from send to the last byte.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Add "ignore_eos": true (vLLM extension) so the output length is exactly max_tokens.</summary>
    public bool IgnoreEos { get; init; }

    /// <summary>The model field for a request.</summary>
    public string ModelFor(string? adapter) =>
        adapter is null ? BaseModel : AdapterAsModel ? adapter : BaseModel + ":" + adapter;
}
