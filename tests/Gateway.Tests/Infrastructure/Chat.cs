using System.Net.Http.Json;
using System.Text;
using System.Text.Json;

namespace Serving.Gateway.Tests.Infrastructure;

/// <summary>Raw OpenAI calls and an SSE reader.</summary>
public static class Chat
{
    public static HttpRequestMessage Request(string model, bool stream = false, string? user = null, int? maxTokens = null, string prompt = "hello") =>
        new(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = JsonContent.Create(new Dictionary<string, object?>
            {
                ["model"] = model, ["stream"] = stream, ["user"] = user, ["max_tokens"] = maxTokens,
                ["messages"] = new[] { new { role = "user", content = prompt } },
            }),
        };

    public static async Task<HttpResponseMessage> SendAsync(HttpClient client, string model, bool stream = false, string? user = null, int? maxTokens = null, string prompt = "hello") =>
        await client.SendAsync(Request(model, stream, user, maxTokens, prompt), HttpCompletionOption.ResponseHeadersRead);

    /// <summary>Reads SSE <c>data:</c> payloads until the stream ends.</summary>
    public static async Task<List<string>> ReadEventsAsync(HttpResponseMessage response, CancellationToken cancellationToken = default)
    {
        var events = new List<string>();
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cancellationToken), Encoding.UTF8);
        while (await reader.ReadLineAsync(cancellationToken) is { } line)
        {
            if (line.StartsWith("data: ", StringComparison.Ordinal)) events.Add(line["data: ".Length..]);
        }
        return events;
    }

    /// <summary>The <c>error.code</c> of an OpenAI error body or event, null when there is none.</summary>
    public static string? ErrorCode(string json)
    {
        using var doc = JsonDocument.Parse(json);
        return doc.RootElement.TryGetProperty("error", out var e) && e.TryGetProperty("code", out var c) ? c.GetString() : null;
    }
}
