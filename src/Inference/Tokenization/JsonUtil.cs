using System.Text.Json;
using Serving.Checkpoints;
using Serving.Contracts.Json;

namespace Serving.Inference.Tokenization;

/// <summary>Small JSON accessors that turn a missing or mistyped key into a <see cref="TokenizerFormatException"/>.</summary>
internal static class JsonUtil
{
    public static JsonDocument Parse(string path)
    {
        byte[] bytes;
        try
        {
            bytes = LinkedFiles.ReadAllBytes(path);
        }
        catch (IOException e)
        {
            throw new TokenizerFormatException(path, $"cannot be read: {e.Message}", e);
        }
        // Text that is not UTF-8 passes the parser and fails wherever the string is first read, as an
        // InvalidOperationException: refuse it here, naming the file and the field.
        if (JsonTextCheck.FindInvalidString(bytes) is { } invalid)
        {
            throw new TokenizerFormatException(path, $"holds text that is not valid UTF-8 (or an escape that leaves a lone surrogate) in {(invalid.Length == 0 ? "a key" : $"'{invalid}'")}");
        }
        try
        {
            return JsonDocument.Parse(bytes, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip, MaxDepth = 256 });
        }
        catch (JsonException e)
        {
            throw new TokenizerFormatException(path, $"is not valid JSON ({e.Message})", e);
        }
    }

    public static string RequiredString(JsonElement obj, string key, string file, string what)
    {
        if (obj.ValueKind == JsonValueKind.Object && obj.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String)
            return v.GetString()!;
        throw new TokenizerFormatException(file, $"{what} needs a string '{key}'");
    }

    public static JsonElement RequiredArray(JsonElement obj, string key, string file, string what)
    {
        if (obj.ValueKind == JsonValueKind.Object && obj.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Array)
            return v;
        throw new TokenizerFormatException(file, $"{what} needs an array '{key}'");
    }

    public static string? OptionalString(JsonElement obj, string key)
    {
        return obj.ValueKind == JsonValueKind.Object && obj.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
    }

    public static bool OptionalBool(JsonElement obj, string key, bool fallback)
    {
        if (obj.ValueKind != JsonValueKind.Object || !obj.TryGetProperty(key, out var v)) return fallback;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => fallback,
        };
    }

    public static JsonElement Property(JsonElement obj, string key)
    {
        return obj.ValueKind == JsonValueKind.Object && obj.TryGetProperty(key, out var v) ? v : default;
    }

    /// <summary>A token given as a string or as <c>{"content": "..."}</c> (AddedToken); null otherwise.</summary>
    public static string? TokenContent(JsonElement v)
    {
        return v.ValueKind switch
        {
            JsonValueKind.String => v.GetString(),
            JsonValueKind.Object => OptionalString(v, "content"),
            _ => null,
        };
    }
}
