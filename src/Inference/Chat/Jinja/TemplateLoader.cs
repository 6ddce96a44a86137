using System.Text.Json;
using Serving.Checkpoints;

namespace Serving.Inference.Chat.Jinja;

/// <summary>A template's text and the file it came from.</summary>
internal sealed record TemplateSource(string Text, string File);

/// <summary>Finds a checkpoint's chat template as transformers does.</summary>
internal static class TemplateLoader
{
    /// <summary>
    /// <c>chat_template.jinja</c> in <paramref name="directory"/> when present (current transformers saves it there and
    /// reads it first), else <c>chat_template</c> of <c>tokenizer_config.json</c>: a string, or a list of named
    /// templates where "default" wins; null when none is there.
    /// </summary>
    public static TemplateSource? Read(string directory)
    {
        var jinja = Path.Combine(directory, "chat_template.jinja");
        if (LinkedFiles.Exists(jinja))
        {
            var text = System.Text.Encoding.UTF8.GetString(LinkedFiles.ReadAllBytes(jinja));
            if (text.Length > 0) return new TemplateSource(text, jinja);
        }
        var path = Path.Combine(directory, "tokenizer_config.json");
        if (!LinkedFiles.Exists(path)) return null;
        var named = ReadNamed(LinkedFiles.ReadAllBytes(path));
        if (named.TryGetValue("default", out var source)) return string.IsNullOrEmpty(source) ? null : new TemplateSource(source, path);
        // As transformers: several templates and none named "default" is an error, not a silent fallback to ChatML.
        if (named.Count > 0) throw new FormatException($"{path}: chat_template lists templates ({string.Join(", ", named.Keys)}) but none named \"default\"");
        return null;
    }

    /// <summary>
    /// The templates of a <c>tokenizer_config.json</c> by name: a string template is "default"; a list of
    /// <c>{"name", "template"}</c> keeps each name (transformers picks "default"; others such as "tool_use" are named).
    /// </summary>
    public static Dictionary<string, string> ReadNamed(byte[] json)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        using var doc = JsonDocument.Parse(json);
        if (!doc.RootElement.TryGetProperty("chat_template", out var t)) return result;
        if (t.ValueKind == JsonValueKind.String)
        {
            result["default"] = t.GetString() ?? string.Empty;
        }
        else if (t.ValueKind == JsonValueKind.Array)
        {
            foreach (var item in t.EnumerateArray())
            {
                if (item.ValueKind == JsonValueKind.Object && item.TryGetProperty("template", out var tt) && tt.ValueKind == JsonValueKind.String
                    && item.TryGetProperty("name", out var n) && n.ValueKind == JsonValueKind.String)
                {
                    result[n.GetString()!] = tt.GetString()!;
                }
            }
        }
        return result;
    }
}
