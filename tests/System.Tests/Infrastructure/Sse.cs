using System.Net.Http.Json;
using System.Text;
using System.Text.Json;

namespace Serving.System.Tests.Infrastructure;

/// <summary>Raw OpenAI requests and an SSE reader.</summary>
public static class Sse
{
    public static HttpRequestMessage Completion(string prompt, int maxTokens, bool stream, string model = Cluster.Model) =>
        new(HttpMethod.Post, "/v1/completions")
        {
            Content = JsonContent.Create(new Dictionary<string, object?>
            {
                ["model"] = model, ["prompt"] = prompt, ["max_tokens"] = maxTokens, ["ignore_eos"] = true, ["temperature"] = 0, ["stream"] = stream,
            }),
        };

    public static HttpRequestMessage Chat(string content, int maxTokens, string model = Cluster.Model) =>
        new(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = JsonContent.Create(new Dictionary<string, object?>
            {
                ["model"] = model, ["max_tokens"] = maxTokens, ["temperature"] = 0.8, ["seed"] = 1,
                ["messages"] = new[] { new { role = "user", content } },
            }),
        };

    /// <summary>SSE <c>data:</c> payloads until the stream ends; <paramref name="onFirstEvent"/> runs when the first arrives.</summary>
    public static async Task<List<string>> ReadEventsAsync(HttpResponseMessage response, CancellationToken cancellationToken = default, Action? onFirstEvent = null)
    {
        var events = new List<string>();
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cancellationToken), Encoding.UTF8);
        while (await reader.ReadLineAsync(cancellationToken) is { } line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
            events.Add(line["data: ".Length..]);
            if (events.Count == 1) onFirstEvent?.Invoke();
        }
        return events;
    }

    /// <summary>The <c>error.code</c> of an OpenAI error body or event, null when there is none.</summary>
    public static string? ErrorCode(string json)
    {
        try
        {
            using var doc = JsonDocument.Parse(json);
            return doc.RootElement.TryGetProperty("error", out var e) && e.TryGetProperty("code", out var c) ? c.GetString() : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }
}
