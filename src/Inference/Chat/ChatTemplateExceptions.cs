namespace Serving.Inference.Chat;

/// <summary>The chat template rejected the messages (its <c>raise_exception</c>), e.g. roles out of order.</summary>
public class ChatTemplateException(string message) : Exception(message);

/// <summary>
/// Rendering failed as it fails under Python's Jinja for the same template and messages (an undefined value used, a
/// type error): the messages do not fit what the template expects.
/// </summary>
public sealed class ChatTemplateRenderException(string message, int line) : ChatTemplateException($"chat template line {line}: {message}")
{
    /// <summary>The template line (1-based).</summary>
    public int Line { get; } = line;
}

/// <summary>A template this engine cannot compile: the construct and its line.</summary>
public class TemplateSyntaxException(string message, int line) : FormatException($"line {line}: {message}")
{
    /// <summary>The template line (1-based).</summary>
    public int Line { get; } = line;
}
