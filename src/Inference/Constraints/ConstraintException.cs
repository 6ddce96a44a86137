namespace Serving.Inference.Constraints;

/// <summary>
/// A constraint (JSON schema, regex, choice list) that cannot be compiled: <see cref="Path"/> locates the offending part
/// (a JSON pointer-like path into the schema, <c>$</c> for the root), <see cref="Keyword"/> names an unsupported
/// keyword when that is the reason. The API maps it to 400.
/// </summary>
public sealed class ConstraintException(string path, string? keyword, string message) : Exception(message)
{
    public string Path { get; } = path;

    public string? Keyword { get; } = keyword;
}
