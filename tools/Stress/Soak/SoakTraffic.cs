using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Serving.LoadGen.Workload;

namespace Serving.Stress.Soak;

/// <summary>
/// The soak's client: chat requests to the base model, public adapters and the soak's own uploaded adapters (whose names
/// change as they are replaced), streamed or not, some abandoned mid-stream; and the churn that uploads and deletes.
/// </summary>
internal sealed class SoakTraffic(HttpClient http, string url, string model, SoakCounters counters, SoakOptions options)
{
    /// <summary>Label of the base model in the popularity list.</summary>
    public const string BaseLabel = "@base";

    private readonly string[] _slots = new string[options.UploadedAdapters];
    private readonly ConcurrentDictionary<string, byte> _deleted = new(StringComparer.Ordinal);
    private readonly ConcurrentQueue<string> _errorDetails = new();
    private int _uploadSerial;

    /// <summary>First error details (at most 100), for the report.</summary>
    public IEnumerable<string> ErrorDetails => _errorDetails;

    /// <summary>Label of uploaded slot <paramref name="j"/> in the popularity list.</summary>
    public static string SlotLabel(int j) => "@slot" + j.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Popularity ranks: the base first, then public adapters and upload slots interleaved.</summary>
    public static IReadOnlyList<string> Ranks(IReadOnlyList<string> publicAdapters, int slots)
    {
        var ranks = new List<string> { BaseLabel };
        for (int i = 0; i < Math.Max(publicAdapters.Count, slots); i++)
        {
            if (i < publicAdapters.Count) ranks.Add("public/" + publicAdapters[i]);
            if (i < slots) ranks.Add(SlotLabel(i));
        }
        return ranks;
    }

    private void Error(string detail)
    {
        counters.CountError();
        if (_errorDetails.Count < 100) _errorDetails.Enqueue($"{DateTime.UtcNow:HH:mm:ss} {detail}");
    }

    /// <summary>Uploads the first generation of every slot.</summary>
    public async Task FillSlotsAsync(IReadOnlyList<string> sources, CancellationToken ct)
    {
        for (int j = 0; j < _slots.Length; j++) _slots[j] = await UploadAsync(sources[j % sources.Count], ct) ?? throw new InvalidOperationException("the first uploads failed; see the errors");
    }

    /// <summary>Replaces slot <paramref name="j"/>'s adapter: upload a new one, point the slot at it, delete the old one.</summary>
    public async Task ChurnAsync(int j, string source, CancellationToken ct)
    {
        string? fresh = await UploadAsync(source, ct);
        if (fresh is null) return;
        string old = _slots[j];
        _slots[j] = fresh;
        _deleted[old] = 0;
        using var request = new HttpRequestMessage(HttpMethod.Delete, $"{url}/v1/adapters/{old}");
        using var response = await http.SendAsync(request, ct);
        if (response.StatusCode == HttpStatusCode.NoContent) counters.CountDelete();
        else
        {
            counters.CountChurnError();
            Error($"delete {old}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync(ct)}");
        }
    }

    private async Task<string?> UploadAsync(string source, CancellationToken ct)
    {
        string name = "soak-" + Interlocked.Increment(ref _uploadSerial).ToString(System.Globalization.CultureInfo.InvariantCulture);
        using var form = new MultipartFormDataContent
        {
            { new StringContent(model), "base_model" },
            { new ByteArrayContent(await File.ReadAllBytesAsync(Path.Combine(source, "adapter_config.json"), ct)), "adapter_config.json", "adapter_config.json" },
            { new ByteArrayContent(await File.ReadAllBytesAsync(Path.Combine(source, "adapter_model.safetensors"), ct)), "adapter_model.safetensors", "adapter_model.safetensors" },
        };
        using var response = await http.PostAsync($"{url}/v1/adapters/{name}", form, ct);
        if (response.IsSuccessStatusCode)
        {
            counters.CountUpload();
            return name;
        }
        counters.CountChurnError();
        Error($"upload {name}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync(ct)}");
        return null;
    }

    /// <summary>Sends one request of the trace and counts how it ended.</summary>
    public async Task SendAsync(TraceRequest r, DeterministicRandom rng, CancellationToken ct)
    {
        string label = r.Adapter ?? BaseLabel;
        string adapter = label == BaseLabel ? "" : label.StartsWith("@slot", StringComparison.Ordinal) ? _slots[int.Parse(label.AsSpan(5), System.Globalization.CultureInfo.InvariantCulture)] : label;
        bool stream, cancel;
        int cancelAfter;
        lock (rng)
        {
            stream = rng.NextDouble() >= options.NonStreamShare;
            cancel = stream && rng.NextDouble() < options.CancelShare;
            cancelAfter = rng.NextInt(1, 6);
        }
        var body = JsonSerializer.SerializeToUtf8Bytes(new Dictionary<string, object>
        {
            ["model"] = adapter.Length == 0 ? model : $"{model}:{adapter}",
            ["messages"] = new[] { new Dictionary<string, string> { ["role"] = "user", ["content"] = r.Prompt } },
            ["max_tokens"] = r.OutputTokens,
            ["temperature"] = 0.8,
            ["stream"] = stream,
        });
        counters.CountSent();
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(TimeSpan.FromMinutes(2));
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, url + "/v1/chat/completions") { Content = new ByteArrayContent(body) };
            request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
            using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
            int status = (int)response.StatusCode;
            if (status is 429 or 503)
            {
                counters.CountRefused(response.Headers.RetryAfter is not null);
                return;
            }
            if (status == 404 && adapter.Length > 0 && _deleted.ContainsKey(adapter))
            {
                counters.CountRacedDelete();
                return;
            }
            if (status != 200)
            {
                Error($"{status} for {label}: {await response.Content.ReadAsStringAsync(timeout.Token)}");
                return;
            }
            if (!stream)
            {
                using var doc = await JsonDocument.ParseAsync(await response.Content.ReadAsStreamAsync(timeout.Token), cancellationToken: timeout.Token);
                if (doc.RootElement.TryGetProperty("choices", out _)) counters.CountCompleted();
                else Error($"non-streamed answer without choices for {label}");
                return;
            }
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(timeout.Token), Encoding.UTF8);
            int chunks = 0;
            string? line;
            while ((line = await reader.ReadLineAsync(timeout.Token)) is not null)
            {
                if (!line.StartsWith("data:", StringComparison.Ordinal)) continue;
                var payload = line.AsSpan(5).Trim();
                if (payload.SequenceEqual("[DONE]"))
                {
                    counters.CountCompleted();
                    return;
                }
                if (payload.Contains("\"error\"", StringComparison.Ordinal) && payload.StartsWith("{\"error\"", StringComparison.Ordinal))
                {
                    Error($"error event for {label}: {payload.ToString()}");
                    return;
                }
                if (cancel && ++chunks >= cancelAfter)
                {
                    counters.CountCancelled(); // disposing the response closes the stream: the server must free the request
                    return;
                }
            }
            Error($"stream for {label} ended without [DONE] or an error event");
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            // the run is over
        }
        catch (OperationCanceledException)
        {
            Error($"timeout for {label}");
        }
        catch (Exception e) when (e is HttpRequestException or IOException or JsonException)
        {
            Error($"{e.GetType().Name} for {label}: {e.Message}");
        }
    }
}
