using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace Serving.LoadGen.Workload;

/// <summary>
/// Reads and writes traces as JSON Lines, one request per line:
/// <c>{"id":0,"arrival_s":0.123456,"adapter":"adapter-3","prompt_tokens":42,"output_tokens":17,"prompt":"..."}</c>.
/// Writing is canonical (fixed key order, fixed number format, '\n' line ends), so writing what was read
/// gives the same bytes.
/// </summary>
public static class TraceFile
{
    private static readonly JsonWriterOptions WriterOptions = new()
    {
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        Indented = false,
        SkipValidation = false,
    };

    /// <summary>Writes a trace to a stream.</summary>
    public static void Write(Stream stream, IEnumerable<TraceRequest> requests)
    {
        foreach (TraceRequest r in requests)
        {
            using (var writer = new Utf8JsonWriter(stream, WriterOptions))
            {
                writer.WriteStartObject();
                writer.WriteNumber("id", r.Id);
                // F6 is exact for µs-rounded values and culture-free, unlike the shortest round-trip form.
                writer.WritePropertyName("arrival_s");
                writer.WriteRawValue(r.ArrivalSeconds.ToString("F6", CultureInfo.InvariantCulture), skipInputValidation: true);
                if (r.Adapter is null)
                {
                    writer.WriteNull("adapter");
                }
                else
                {
                    writer.WriteString("adapter", r.Adapter);
                }

                writer.WriteNumber("prompt_tokens", r.PromptTokens);
                writer.WriteNumber("output_tokens", r.OutputTokens);
                writer.WriteString("prompt", r.Prompt);
                writer.WriteEndObject();
            }

            stream.WriteByte((byte)'\n');
        }
    }

    /// <summary>Writes a trace to a file (created or replaced).</summary>
    public static void Write(string path, IEnumerable<TraceRequest> requests)
    {
        string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null)
        {
            Directory.CreateDirectory(dir);
        }

        using FileStream fs = File.Create(path);
        Write(fs, requests);
    }

    /// <summary>
    /// Reads a trace. Required per line: <c>output_tokens</c> and one of <c>prompt</c> or <c>prompt_tokens</c>.
    /// Missing <c>id</c> becomes the line's position, missing <c>arrival_s</c> 0, missing <c>adapter</c> the
    /// base model, a missing prompt is synthesised (seeded by <paramref name="seed"/> and the line), a
    /// missing <c>prompt_tokens</c> is the prompt's word count. Unknown keys are ignored.
    /// </summary>
    public static IReadOnlyList<TraceRequest> Read(TextReader reader, ulong seed = 0)
    {
        var result = new List<TraceRequest>();
        string? line;
        int lineNumber = 0;
        while ((line = reader.ReadLine()) is not null)
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line))
            {
                continue;
            }

            try
            {
                result.Add(ParseLine(line, result.Count, seed));
            }
            catch (Exception ex) when (ex is JsonException or FormatException or InvalidOperationException)
            {
                throw new FormatException($"Trace line {lineNumber}: {ex.Message}", ex);
            }
        }

        return result;
    }

    /// <summary>Reads a trace file.</summary>
    public static IReadOnlyList<TraceRequest> Read(string path, ulong seed = 0)
    {
        using var reader = new StreamReader(path, Encoding.UTF8);
        return Read(reader, seed);
    }

    private static TraceRequest ParseLine(string line, int position, ulong seed)
    {
        using JsonDocument doc = JsonDocument.Parse(line);
        JsonElement root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object)
        {
            throw new FormatException("expected a JSON object.");
        }

        int id = root.TryGetProperty("id", out JsonElement idEl) ? idEl.GetInt32() : position;
        double arrival = root.TryGetProperty("arrival_s", out JsonElement arrEl) && arrEl.ValueKind != JsonValueKind.Null
            ? ArrivalProcess.RoundToMicroseconds(arrEl.GetDouble())
            : 0.0;
        if (!(arrival >= 0) || double.IsInfinity(arrival))
        {
            throw new FormatException($"arrival_s must be finite and >= 0 (got {arrival}).");
        }

        string? adapter = root.TryGetProperty("adapter", out JsonElement adEl) && adEl.ValueKind == JsonValueKind.String ? adEl.GetString() : null;
        if (!root.TryGetProperty("output_tokens", out JsonElement outEl))
        {
            throw new FormatException("missing output_tokens.");
        }

        int output = outEl.GetInt32();
        string? prompt = root.TryGetProperty("prompt", out JsonElement pEl) && pEl.ValueKind == JsonValueKind.String ? pEl.GetString() : null;
        int? promptTokens = root.TryGetProperty("prompt_tokens", out JsonElement ptEl) && ptEl.ValueKind == JsonValueKind.Number ? ptEl.GetInt32() : null;
        if (prompt is null && promptTokens is null)
        {
            throw new FormatException("needs prompt or prompt_tokens.");
        }

        if (output < 1 || promptTokens < 0)
        {
            throw new FormatException("output_tokens must be >= 1 and prompt_tokens >= 0.");
        }

        prompt ??= PromptSynthesizer.Synthesize(promptTokens!.Value, new DeterministicRandom(seed, 1000UL + (ulong)position));
        return new TraceRequest(id, arrival, adapter, promptTokens ?? PromptSynthesizer.EstimateTokens(prompt), output, prompt);
    }
}
