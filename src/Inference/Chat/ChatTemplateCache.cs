using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;

namespace Serving.Inference.Chat;

/// <summary>
/// Per-request templates (vLLM's <c>chat_template</c> request field) compiled once and kept by the SHA-256 of their
/// text, at most <see cref="Capacity"/> of them (the cache starts over when full). A template the engine cannot render
/// is refused by <see cref="Get"/> with a <see cref="TemplateSyntaxException"/> naming the construct and the line; the
/// refusal is not cached.
/// </summary>
public sealed class ChatTemplateCache(TimeProvider? time = null, int capacity = 64)
{
    private readonly ConcurrentDictionary<string, ChatTemplate> _templates = new(StringComparer.Ordinal);

    /// <summary>The most templates kept.</summary>
    public int Capacity { get; } = capacity;

    /// <summary>Templates compiled so far (for tests: a second request with the same text compiles nothing).</summary>
    public int Compiled => _compiled;

    private int _compiled;

    /// <summary>The compiled template for <paramref name="source"/>, compiling and probing it on first use.</summary>
    public ChatTemplate Get(string source)
    {
        var key = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(source)));
        if (_templates.TryGetValue(key, out var template)) return template;
        template = ChatTemplate.Load(source, time);
        Interlocked.Increment(ref _compiled);
        if (_templates.Count >= Capacity) _templates.Clear();
        return _templates.GetOrAdd(key, template);
    }
}
