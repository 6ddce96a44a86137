using System.Text.Json;

namespace Serving.Gateway.RateLimiting;

/// <summary>
/// A node's <c>usage</c>: prompt tokens (counted once, however many choices), completion tokens of the choices returned,
/// and <c>generated_tokens</c> (the node's extension: every token generated, hidden alignment candidates and beams
/// included; absent from nodes that do not report it, then equal to the completion tokens).
/// </summary>
public readonly record struct UsageReport(long PromptTokens, long CompletionTokens, long GeneratedTokens)
{
    /// <summary>What the tenant is charged: the prompt once plus everything generated.</summary>
    public long Charge => PromptTokens + GeneratedTokens;
}

/// <summary>What one JSON object (a response body or one SSE chunk) says about usage.</summary>
/// <param name="Usage">The top-level <c>usage</c> object, null when absent or <c>null</c>.</param>
/// <param name="UsageRange">Byte range of the <c>"usage": value</c> member (name to value end); Start -1 when absent.</param>
/// <param name="ValueStart">Byte offset of the usage value.</param>
/// <param name="ChoicesEmpty">True when <c>choices</c> is an empty array (the usage-only and alignment chunks).</param>
internal readonly record struct UsageInJson(UsageReport? Usage, (int Start, int Length) UsageRange, int ValueStart, bool ChoicesEmpty)
{
    /// <summary>Reads the top level of one JSON object; null when <paramref name="json"/> is not a JSON object.</summary>
    public static UsageInJson? Read(ReadOnlySpan<byte> json)
    {
        try
        {
            var reader = new Utf8JsonReader(json, new JsonReaderOptions { MaxDepth = 256 });
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject) return null;
            UsageReport? usage = null;
            (int, int) range = (-1, 0);
            int valueStart = -1;
            bool choicesEmpty = false;
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                int nameStart = (int)reader.TokenStartIndex;
                if (reader.ValueTextEquals("usage"u8))
                {
                    reader.Read();
                    valueStart = (int)reader.TokenStartIndex;
                    usage = reader.TokenType == JsonTokenType.StartObject ? ReadUsage(ref reader) : Skip(ref reader);
                    range = (nameStart, (int)reader.BytesConsumed - nameStart);
                }
                else if (reader.ValueTextEquals("choices"u8))
                {
                    reader.Read();
                    if (reader.TokenType != JsonTokenType.StartArray)
                    {
                        reader.Skip();
                        continue;
                    }
                    int depth = reader.CurrentDepth;
                    reader.Read();
                    choicesEmpty = reader.TokenType == JsonTokenType.EndArray;
                    while (!(reader.TokenType == JsonTokenType.EndArray && reader.CurrentDepth == depth))
                    {
                        reader.Skip();
                        reader.Read();
                    }
                }
                else
                {
                    reader.Read();
                    reader.Skip();
                }
            }
            return new UsageInJson(usage, range, valueStart, choicesEmpty);
        }
        catch (JsonException)
        {
            return null;
        }
    }

    private static UsageReport? Skip(ref Utf8JsonReader reader)
    {
        reader.Skip();
        return null;
    }

    private static UsageReport? ReadUsage(ref Utf8JsonReader reader)
    {
        long prompt = -1, completion = -1, generated = -1;
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            ref long target = ref prompt;
            bool known = true;
            if (reader.ValueTextEquals("prompt_tokens"u8)) target = ref prompt;
            else if (reader.ValueTextEquals("completion_tokens"u8)) target = ref completion;
            else if (reader.ValueTextEquals("generated_tokens"u8)) target = ref generated;
            else known = false;
            reader.Read();
            if (known && reader.TokenType == JsonTokenType.Number && reader.TryGetInt64(out long value) && value >= 0) target = value;
            else reader.Skip();
        }
        if (prompt < 0 || completion < 0) return null;
        return new UsageReport(prompt, completion, generated >= 0 ? Math.Max(generated, completion) : completion);
    }
}
