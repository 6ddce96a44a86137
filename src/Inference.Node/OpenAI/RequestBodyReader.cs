using System.Text.Json;
using Serving.Contracts.Errors;
using Serving.Contracts.Json;

namespace Serving.Inference.Node.OpenAI;

/// <summary>
/// Reads an OpenAI request body into its type, or throws the 400 that names the field at fault: text that is not UTF-8
/// (or escapes that leave a lone surrogate) anywhere in a string, a value of the wrong JSON type, malformed JSON. Every
/// string the request carries is checked before any is read, so no later read of one fails on the request path.
/// </summary>
internal static class RequestBodyReader
{
    public static async Task<TBody> ReadAsync<TBody>(HttpRequest request, CancellationToken cancellationToken) where TBody : class
    {
        byte[] bytes;
        using (var buffer = new MemoryStream(request.ContentLength is > 0 and <= int.MaxValue ? (int)request.ContentLength : 4096))
        {
            await request.Body.CopyToAsync(buffer, cancellationToken).ConfigureAwait(false);
            bytes = buffer.ToArray();
        }
        return Parse<TBody>(bytes);
    }

    /// <summary>The body as <typeparamref name="TBody"/>; a UTF-8 byte order mark is skipped, as the stream reader did.</summary>
    public static TBody Parse<TBody>(ReadOnlySpan<byte> json) where TBody : class
    {
        if (json.StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF])) json = json[3..];
        if (JsonTextCheck.FindInvalidString(json) is { } path)
        {
            throw Refusals.Invalid(path.Length == 0 ? null : path,
                $"The request body holds text that is not valid UTF-8 (or an escape that leaves a lone surrogate) in {(path.Length == 0 ? "a property name" : $"'{path}'")}; send UTF-8 JSON.",
                ErrorCodes.InvalidJson);
        }
        try
        {
            return JsonSerializer.Deserialize<TBody>(json, OpenAIApi.RequestJson) ?? throw Refusals.Invalid(null, "The request body must be a JSON object.");
        }
        catch (JsonException e)
        {
            var param = e.Path is { Length: > 2 } p && p.StartsWith("$.", StringComparison.Ordinal) ? p[2..] : null;
            throw Refusals.Invalid(param, $"The request body is not valid JSON for this endpoint: {e.Message}", ErrorCodes.InvalidJson);
        }
    }
}
