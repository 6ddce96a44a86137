using System.Text.Json;
using Serving.Checkpoints;

namespace Serving.Inference.Chat.Jinja;

/// <summary>Finds a checkpoint's chat template source in its <c>tokenizer_config.json</c>.</summary>
internal static class TemplateLoader
{
    /// <summary>
    /// <c>chat_template</c> of <c>tokenizer_config.json</c> in <paramref name="directory"/>: a string, or a list of named
    /// templates where "default" wins; null when the file or the key is absent or empty.
    /// </summary>
    public static string? ReadChatTemplate(string directory)
    {
        var path = Path.Combine(directory, "tokenizer_config.json");
        if (!LinkedFiles.Exists(path)) return null;
        using var doc = JsonDocument.Parse(LinkedFiles.ReadAllBytes(path));
        if (!doc.RootElement.TryGetProperty("chat_template", out var t)) return null;
        string? source = null;
        if (t.ValueKind == JsonValueKind.String)
        {
            source = t.GetString();
        }
        else if (t.ValueKind == JsonValueKind.Array)
        {
            foreach (var item in t.EnumerateArray())
            {
                if (item.TryGetProperty("template", out var tt) && (source is null || item.TryGetProperty("name", out var n) && n.GetString() == "default"))
                {
                    source = tt.GetString();
                }
            }
        }
        return string.IsNullOrEmpty(source) ? null : source;
    }
}
