using System.Globalization;
using System.Text;
using System.Text.Json;
using Serving.Inference.Chat;
using Serving.Inference.Chat.Jinja;
using Xunit;

namespace Serving.Inference.Tests.Chat;

/// <summary>
/// The corpus of real chat templates (<c>Chat/Corpus/</c>, sources and licences in its README) rendered for every
/// conversation of <c>conversations.json</c> and compared with what Python's jinja2 renders in transformers'
/// configuration (<c>expected.json</c>, written by <c>tools/forge/chat_templates/render_expected.py</c>, an independent
/// implementation). A pair agrees when the text is equal, when both raise the template's own
/// <c>raise_exception</c> with the same message, or when both fail to render (an undefined value used, a type error).
/// </summary>
public sealed class TemplateCorpusTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static readonly string Dir = Path.Combine(AppContext.BaseDirectory, "Chat", "Corpus");

    /// <summary>The clock render_expected.py fixes strftime_now to: 4 Dec 2026, 09:30 local time.</summary>
    private sealed class FixedClock : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => new(2026, 12, 4, 9, 30, 0, TimeSpan.Zero);
        public override TimeZoneInfo LocalTimeZone => TimeZoneInfo.Utc;
    }

    private sealed record Outcome(string Template, int Pairs, int Equal, string? Refused, List<string> Mismatches);

    [Fact]
    public void Corpus_EveryPair_EqualsJinja2OrTheTemplateIsRefusedAtLoad()
    {
        using var corpus = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(Dir, "corpus.json")));
        using var conversations = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(Dir, "conversations.json")));
        using var expected = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(Dir, "expected.json")));
        var renders = expected.RootElement.GetProperty("renders");
        var outcomes = new List<Outcome>();
        foreach (var entry in corpus.RootElement.EnumerateArray())
        {
            var name = entry.GetProperty("name").GetString()!;
            var source = File.ReadAllText(Path.Combine(Dir, "templates", name + ".jinja"));
            var cases = renders.GetProperty(name);
            var pairs = cases.EnumerateObject().Count();
            ChatTemplate template;
            try
            {
                template = ChatTemplate.Load(source, new FixedClock());
            }
            catch (TemplateSyntaxException e)
            {
                outcomes.Add(new Outcome(name, pairs, 0, e.Message, []));
                continue;
            }
            var equal = 0;
            var mismatches = new List<string>();
            foreach (var c in conversations.RootElement.EnumerateArray())
            {
                var conversation = c.GetProperty("name").GetString()!;
                if (!cases.TryGetProperty(conversation, out var want)) continue;
                var verdict = Compare(template, entry, c, want);
                if (verdict is null) equal++;
                else mismatches.Add($"{conversation}: {verdict}");
            }
            outcomes.Add(new Outcome(name, pairs, equal, null, mismatches));
        }

        var total = outcomes.Sum(o => o.Pairs);
        var equalPairs = outcomes.Sum(o => o.Equal);
        var report = Report(outcomes, total, equalPairs);
        output.WriteLine(report);
        File.WriteAllText(Path.Combine(AppContext.BaseDirectory, "chat-template-corpus.md"), report);

        Assert.True(outcomes.Count >= 40, $"the corpus has {outcomes.Count} templates, fewer than 40");
        Assert.All(outcomes.Where(o => o.Refused is null), o => Assert.True(o.Mismatches.Count == 0,
            $"{o.Template} loads but renders differently from jinja2:\n{string.Join("\n", o.Mismatches)}"));
        Assert.True(equalPairs >= 0.97 * total, $"{equalPairs} of {total} pairs equal jinja2's render, fewer than 97%");
    }

    /// <summary>Null when the engine's render agrees with jinja2's, else what differs.</summary>
    private static string? Compare(ChatTemplate template, JsonElement entry, JsonElement conversation, JsonElement want)
    {
        var options = new ChatRenderOptions
        {
            AddGenerationPrompt = conversation.GetProperty("add_generation_prompt").GetBoolean(),
            BosToken = entry.GetProperty("bos_token").GetString(),
            EosToken = entry.GetProperty("eos_token").GetString(),
            Tools = conversation.TryGetProperty("tools", out var tools) ? [.. tools.EnumerateArray()] : null,
        };
        var messages = conversation.GetProperty("messages").EnumerateArray().Select(ToMessage).ToList();
        string? text = null;
        Exception? error = null;
        try
        {
            text = template.Render(messages, options);
        }
        catch (ChatTemplateException e)
        {
            error = e;
        }
        if (want.TryGetProperty("text", out var wantText))
        {
            var w = wantText.GetString()!;
            if (error is not null) return $"jinja2 renders, this engine fails: {error.Message}";
            return text == w ? null : $"differs at offset {FirstDifference(text!, w)}:\n  want {Around(w, FirstDifference(text!, w))}\n  got  {Around(text!, FirstDifference(text!, w))}";
        }
        var raised = want.GetProperty("raised").GetBoolean();
        var message = want.GetProperty("error").GetString()!;
        if (error is null) return $"jinja2 fails ({message}), this engine renders";
        if (raised) return error is not ChatTemplateRenderException && error.Message == message ? null : $"jinja2 raises '{message}', this engine: {error.Message}";
        return error is ChatTemplateRenderException ? null : $"jinja2 fails ({message}), this engine raises: {error.Message}";
    }

    private static ChatMessage ToMessage(JsonElement m)
    {
        var content = m.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String ? c.GetString() : null;
        return new ChatMessage(m.GetProperty("role").GetString()!, content)
        {
            Name = m.TryGetProperty("name", out var n) ? n.GetString() : null,
            ToolCallId = m.TryGetProperty("tool_call_id", out var id) ? id.GetString() : null,
            ToolCalls = m.TryGetProperty("tool_calls", out var calls)
                ? [.. calls.EnumerateArray().Select(t => new ChatToolCall(t.GetProperty("id").GetString()!,
                    t.GetProperty("function").GetProperty("name").GetString()!, t.GetProperty("function").GetProperty("arguments").GetString()!))]
                : null,
        };
    }

    private static int FirstDifference(string a, string b)
    {
        var i = 0;
        while (i < a.Length && i < b.Length && a[i] == b[i]) i++;
        return i;
    }

    private static string Around(string s, int at) =>
        JsonSerializer.Serialize(s.Substring(Math.Max(0, at - 40), Math.Min(s.Length, at + 40) - Math.Max(0, at - 40)));

    private static string Report(List<Outcome> outcomes, int total, int equalPairs)
    {
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"{equalPairs} of {total} (template, conversation) pairs equal jinja2's render ({100.0 * equalPairs / total:F1}%); ");
        sb.Append(CultureInfo.InvariantCulture, $"{outcomes.Count(o => o.Refused is not null)} of {outcomes.Count} templates refused at load.\n\n");
        sb.Append("| template | pairs | equal | refused at load |\n|---|---|---|---|\n");
        foreach (var o in outcomes)
        {
            sb.Append(CultureInfo.InvariantCulture, $"| {o.Template} | {o.Pairs} | {o.Equal} | {o.Refused?.Replace("|", "\\|", StringComparison.Ordinal) ?? ""} |\n");
        }
        return sb.ToString();
    }
}
