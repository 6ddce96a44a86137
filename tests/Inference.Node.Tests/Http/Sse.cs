using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Serving.Inference.Node.Tests.Http;

/// <summary>A received SSE event with its arrival time.</summary>
public sealed record SseEvent(string Data, long ReceivedTicks)
{
    public JsonObject Json => JsonNode.Parse(Data)!.AsObject();
}

/// <summary>Raw HTTP helpers: posts JSON and reads SSE events exactly as framed on the wire.</summary>
public static class Sse
{
    public static HttpRequestMessage Post(string path, object body) =>
        new(HttpMethod.Post, path) { Content = JsonContent.Create(body) };

    /// <summary>Reads the whole stream, checking the framing: every event is one <c>data: </c> line followed by a blank line.</summary>
    public static async Task<List<SseEvent>> ReadAllAsync(HttpResponseMessage response, CancellationToken ct = default)
    {
        var events = new List<SseEvent>();
        await foreach (var e in ReadAsync(response, ct)) events.Add(e);
        return events;
    }

    public static async IAsyncEnumerable<SseEvent> ReadAsync(HttpResponseMessage response, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct = default)
    {
        await using var stream = await response.Content.ReadAsStreamAsync(ct);
        using var reader = new StreamReader(stream, Encoding.UTF8);
        while (await reader.ReadLineAsync(ct) is { } line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal)) throw new InvalidDataException($"expected a data line, got '{line}'");
            var blank = await reader.ReadLineAsync(ct);
            if (blank != string.Empty) throw new InvalidDataException($"expected a blank line after an event, got '{blank}'");
            yield return new SseEvent(line["data: ".Length..], System.Diagnostics.Stopwatch.GetTimestamp());
        }
    }

    /// <summary>Concatenated text of one choice of a completions or chat stream.</summary>
    public static string Text(IEnumerable<SseEvent> events, int choice = 0)
    {
        var sb = new StringBuilder();
        foreach (var e in events)
        {
            if (e.Data == "[DONE]") continue;
            foreach (var c in e.Json["choices"]!.AsArray())
            {
                if ((int)c!["index"]! != choice) continue;
                var text = c["text"] ?? c["delta"]?["content"];
                if (text is not null) sb.Append((string)text!);
            }
        }
        return sb.ToString();
    }

    public static async Task<JsonObject> JsonAsync(HttpResponseMessage response) =>
        JsonNode.Parse(await response.Content.ReadAsStringAsync())!.AsObject();

    public static JsonSerializerOptions Options { get; } = new(JsonSerializerDefaults.Web);
}
