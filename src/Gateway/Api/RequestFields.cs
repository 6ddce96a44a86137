using System.Text.Json;

namespace Serving.Gateway.Api;

/// <summary>A top-level field the gateway reads has the wrong JSON type; <see cref="JsonException.Path"/>-like <see cref="Param"/> names it.</summary>
internal sealed class RequestFieldException(string param, string message) : JsonException(message)
{
    /// <summary>The field, as the node names it in its own refusal (<c>stream_options.include_usage</c>).</summary>
    public string Param { get; } = param;
}

/// <summary>The fields of an OpenAI request body the gateway needs (routing, token reservation, usage of streams).</summary>
/// <param name="Model">The <c>model</c> string.</param>
/// <param name="ModelStart">Byte offset of the model's JSON string token (including its quote).</param>
/// <param name="ModelLength">Byte length of that token (quotes included).</param>
/// <param name="MaxTokens">
/// max_tokens (chat: max_completion_tokens, else max_tokens), null when absent; negative values are the node's to refuse.
/// </param>
/// <param name="N">n (completions: the larger of n and best_of), 1 when absent or below 1 (the node refuses those).</param>
internal readonly record struct RequestFields(string? Model, int ModelStart, int ModelLength, int? MaxTokens, int N)
{
    /// <summary>The field <see cref="MaxTokens"/> came from (<c>max_tokens</c> when neither was set).</summary>
    public string MaxTokensParam { get; init; } = "max_tokens";

    /// <summary><c>"stream": true</c>.</summary>
    public bool Stream { get; init; }

    /// <summary>The client asked for the final usage chunk (<c>stream_options.include_usage</c>).</summary>
    public bool IncludeUsage { get; init; }

    /// <summary>The client asked for usage in every chunk (<c>stream_options.continuous_usage_stats</c>, vLLM's).</summary>
    public bool ContinuousUsage { get; init; }

    /// <summary>Byte range of the <c>stream_options</c> value, Start -1 when absent.</summary>
    public (int Start, int Length) StreamOptions { get; init; } = (-1, 0);

    /// <summary>Byte offset just after the top-level object's <c>{</c>.</summary>
    public int BodyStart { get; init; }

    /// <summary>
    /// Reads the top-level fields; throws <see cref="JsonException"/> for malformed JSON or a non-object and
    /// <see cref="RequestFieldException"/> when a field the gateway reads has the wrong type. Like the node, the last of
    /// duplicate keys wins.
    /// </summary>
    /// <param name="json">The body.</param>
    /// <param name="chat">A chat completion (<c>max_completion_tokens</c> counts; <c>best_of</c> does not exist).</param>
    public static RequestFields Parse(ReadOnlySpan<byte> json, bool chat = true)
    {
        var reader = new Utf8JsonReader(json, new JsonReaderOptions { MaxDepth = 64 });
        if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject) throw new JsonException("The body must be a JSON object.");
        int bodyStart = (int)reader.BytesConsumed;
        string? model = null;
        int start = 0, length = 0, n = 1, bestOf = 1;
        int? maxTokens = null, maxCompletionTokens = null;
        bool stream = false, includeUsage = false, continuous = false;
        (int, int) streamOptions = (-1, 0);
        while (reader.Read())
        {
            if (reader.TokenType == JsonTokenType.EndObject && reader.CurrentDepth == 0) break;
            if (reader.TokenType != JsonTokenType.PropertyName || reader.CurrentDepth != 1) continue;
            if (reader.ValueTextEquals("model"u8))
            {
                reader.Read();
                if (reader.TokenType == JsonTokenType.Null)
                {
                    model = null;
                    continue;
                }
                if (reader.TokenType != JsonTokenType.String) throw new RequestFieldException("model", "'model' must be a string.");
                model = reader.GetString();
                start = (int)reader.TokenStartIndex;
                length = (int)(reader.BytesConsumed - reader.TokenStartIndex);
            }
            else if (reader.ValueTextEquals("max_tokens"u8))
            {
                maxTokens = Int(ref reader, "max_tokens");
            }
            else if (reader.ValueTextEquals("max_completion_tokens"u8) && chat)
            {
                maxCompletionTokens = Int(ref reader, "max_completion_tokens");
            }
            else if (reader.ValueTextEquals("n"u8))
            {
                n = Int(ref reader, "n") ?? 1;
            }
            else if (reader.ValueTextEquals("best_of"u8) && !chat)
            {
                bestOf = Int(ref reader, "best_of") ?? 1;
            }
            else if (reader.ValueTextEquals("stream"u8))
            {
                stream = Bool(ref reader, "stream") ?? false;
            }
            else if (reader.ValueTextEquals("stream_options"u8))
            {
                reader.Read();
                includeUsage = continuous = false;
                if (reader.TokenType == JsonTokenType.Null)
                {
                    streamOptions = ((int)reader.TokenStartIndex, 4);
                    continue;
                }
                if (reader.TokenType != JsonTokenType.StartObject) throw new RequestFieldException("stream_options", "'stream_options' must be an object.");
                int optionsStart = (int)reader.TokenStartIndex;
                while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
                {
                    if (reader.ValueTextEquals("include_usage"u8)) includeUsage = Bool(ref reader, "stream_options.include_usage") ?? false;
                    else if (reader.ValueTextEquals("continuous_usage_stats"u8)) continuous = Bool(ref reader, "stream_options.continuous_usage_stats") ?? false;
                    else
                    {
                        reader.Read();
                        reader.Skip();
                    }
                }
                streamOptions = (optionsStart, (int)reader.BytesConsumed - optionsStart);
            }
            else
            {
                reader.Read();
                reader.Skip();
            }
        }
        if (reader.TokenType != JsonTokenType.EndObject || reader.CurrentDepth != 0) throw new JsonException("The body ends before its JSON object does.");
        return new RequestFields(model, start, length, chat ? maxCompletionTokens ?? maxTokens : maxTokens, Math.Max(Math.Max(1, n), bestOf))
        {
            MaxTokensParam = chat && maxCompletionTokens is not null ? "max_completion_tokens" : "max_tokens",
            Stream = stream,
            IncludeUsage = includeUsage,
            ContinuousUsage = includeUsage && continuous,
            StreamOptions = streamOptions,
            BodyStart = bodyStart,
        };
    }

    private static int? Int(ref Utf8JsonReader reader, string param)
    {
        reader.Read();
        if (reader.TokenType == JsonTokenType.Null) return null;
        if (reader.TokenType == JsonTokenType.Number && reader.TryGetInt32(out int value)) return value;
        throw new RequestFieldException(param, $"'{param}' must be an integer (32-bit) or null.");
    }

    private static bool? Bool(ref Utf8JsonReader reader, string param)
    {
        reader.Read();
        return reader.TokenType switch
        {
            JsonTokenType.True => true,
            JsonTokenType.False => false,
            JsonTokenType.Null => null,
            _ => throw new RequestFieldException(param, $"'{param}' must be true, false or null."),
        };
    }
}
