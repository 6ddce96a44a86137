using System.Text.Json.Serialization;

namespace Serving.Contracts.Errors;

/// <summary>OpenAI's error object: what went wrong, its type, the request field at fault, a stable code.</summary>
/// <param name="Message">A sentence the caller can act on.</param>
/// <param name="Type">OpenAI's <c>type</c> (<see cref="ErrorTypes"/>).</param>
/// <param name="Param">The request field at fault, null when none is.</param>
/// <param name="Code">The stable code (<see cref="ErrorCodes"/>), null for a plain bad parameter value as OpenAI sends it.</param>
public sealed record OpenAIError(
    [property: JsonPropertyName("message")] string Message,
    [property: JsonPropertyName("type")] string Type,
    [property: JsonPropertyName("param")] string? Param,
    [property: JsonPropertyName("code")] string? Code);

/// <summary>OpenAI's error envelope: <c>{"error": {"message", "type", "param", "code"}}</c>; every OpenAI route of node and gateway answers it.</summary>
public sealed record OpenAIErrorBody([property: JsonPropertyName("error")] OpenAIError Error);
