using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Serving.Inference.Chat.Jinja;

namespace Serving.Inference.Chat;

/// <summary>
/// One chat message as the template sees it: <c>role</c>, <c>content</c> (null when the client sent none),
/// and where present <c>name</c>, <c>tool_calls</c> and <c>tool_call_id</c>.
/// </summary>
public sealed record ChatMessage(string Role, string? Content)
{
    /// <summary>The text parts, when the client sent <c>content</c> as a list of parts (<see cref="Content"/> then holds them joined by newlines).</summary>
    public IReadOnlyList<string>? ContentParts { get; init; }

    /// <summary>The message's <c>name</c>.</summary>
    public string? Name { get; init; }

    /// <summary>An assistant message's <c>tool_calls</c>.</summary>
    public IReadOnlyList<ChatToolCall>? ToolCalls { get; init; }

    /// <summary>A <c>tool</c> message's <c>tool_call_id</c>.</summary>
    public string? ToolCallId { get; init; }
}

/// <summary>One tool call of an assistant message; <see cref="Arguments"/> is the JSON text the client sent.</summary>
public sealed record ChatToolCall(string Id, string Name, string Arguments)
{
    /// <summary>The call's <c>type</c> (always <c>function</c> in the OpenAI API).</summary>
    public string Type { get; init; } = "function";
}

/// <summary>How a conversation is rendered: the variables transformers' <c>apply_chat_template</c> passes to a template.</summary>
public sealed record ChatRenderOptions
{
    /// <summary><c>add_generation_prompt</c>.</summary>
    public bool AddGenerationPrompt { get; init; } = true;

    /// <summary>
    /// <c>continue_final_message</c>: the prompt ends with the last message's text (its end-of-turn cut off) so the model
    /// continues it; as transformers does, this cannot be combined with <see cref="AddGenerationPrompt"/>.
    /// </summary>
    public bool ContinueFinalMessage { get; init; }

    /// <summary><c>tools</c>: the OpenAI tool objects (<c>{"type": "function", "function": {...}}</c>); absent when null.</summary>
    public IReadOnlyList<JsonElement>? Tools { get; init; }

    /// <summary><c>chat_template_kwargs</c>: further variables for the template (e.g. <c>enable_thinking</c>).</summary>
    public IReadOnlyDictionary<string, JsonElement>? Kwargs { get; init; }

    /// <summary><c>bos_token</c> (empty when null).</summary>
    public string? BosToken { get; init; }

    /// <summary><c>eos_token</c> (empty when null).</summary>
    public string? EosToken { get; init; }
}

/// <summary>
/// Renders chat messages into a prompt with a Hugging Face chat template exactly as transformers'
/// <c>apply_chat_template</c> does: Jinja (<c>Jinja/</c>: lexer, parser, evaluator, builtins) in transformers'
/// configuration — <c>trim_blocks</c>, <c>lstrip_blocks</c>, <c>loopcontrols</c>, the globals <c>raise_exception</c>
/// and <c>strftime_now</c>, <c>tojson</c> without ASCII escaping — with Python's semantics for values and Jinja's for
/// undefined ones. A construct the engine cannot render is refused when the template is compiled
/// (<see cref="TemplateSyntaxException"/>, naming it and its line), never silently rendered differently.
/// A checkpoint without a template gets <see cref="DefaultTemplate"/> (ChatML). Thread-safe: a compiled template is
/// immutable and each render has its own scope.
/// </summary>
public sealed partial class ChatTemplate
{
    /// <summary>ChatML, used when a checkpoint has no <c>chat_template</c>.</summary>
    public const string DefaultTemplate =
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}" +
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    private readonly List<Node> _nodes;
    private readonly TimeProvider _time;

    /// <summary>Compiles <paramref name="source"/>; throws <see cref="TemplateSyntaxException"/> for what this engine cannot render.</summary>
    /// <param name="time">The clock <c>strftime_now</c> reads (local time, as transformers' <c>datetime.now()</c>); the system clock by default.</param>
    public ChatTemplate(string source, TimeProvider? time = null)
    {
        Source = source;
        _time = time ?? TimeProvider.System;
        _nodes = JinjaParser.Parse(source);
        ContentAsParts = IteratesContent().IsMatch(source);
    }

    /// <summary>The template text.</summary>
    public string Source { get; }

    /// <summary>
    /// Whether the template walks <c>message.content</c> as a list of parts (vLLM's "openai" content format); otherwise
    /// text parts reach it joined by newlines as one string (vLLM's "string" format), as vLLM detects per template.
    /// </summary>
    public bool ContentAsParts { get; }

    [GeneratedRegex(@"\{%-?\s*for\s+\w+\s+in\s+\w+(\.content|\[\s*['""]content['""]\s*\])\s*(-?%\}|\|)")]
    private static partial Regex IteratesContent();

    /// <summary>
    /// The checkpoint's template as transformers reads it (<see cref="TemplateLoader"/>: <c>chat_template.jinja</c>
    /// beside the checkpoint, else <c>chat_template</c> of <c>tokenizer_config.json</c>), or <paramref name="overridePath"/>
    /// when given, or <see cref="DefaultTemplate"/>. A template this engine cannot render is refused here, at load, with
    /// a <see cref="FormatException"/> naming the file, the construct and the line.
    /// </summary>
    public static ChatTemplate FromCheckpoint(string directory, out bool isDefault, TimeProvider? time = null, string? overridePath = null)
    {
        var found = overridePath is not null
            ? new TemplateSource(File.ReadAllText(overridePath), overridePath)
            : TemplateLoader.Read(directory);
        isDefault = found is null;
        if (found is null) return new ChatTemplate(DefaultTemplate, time);
        try
        {
            return Load(found.Text, time);
        }
        catch (TemplateSyntaxException e)
        {
            throw new FormatException($"{found.File}: the chat template cannot be rendered by this engine: {e.Message}", e);
        }
    }

    /// <summary>
    /// The named templates of the checkpoint's <c>tokenizer_config.json</c> (a list of <c>{"name", "template"}</c>; a
    /// single string is "default"), in file order; transformers renders "default" unless asked for another name.
    /// </summary>
    public static IReadOnlyDictionary<string, string> NamedTemplates(string directory)
    {
        var path = Path.Combine(directory, "tokenizer_config.json");
        return Serving.Checkpoints.LinkedFiles.Exists(path) ? TemplateLoader.ReadNamed(Serving.Checkpoints.LinkedFiles.ReadAllBytes(path)) : new Dictionary<string, string>();
    }

    /// <summary>
    /// Compiles <paramref name="source"/> and renders plain conversations with it once (<see cref="Probe"/>): what this
    /// engine cannot render is a <see cref="TemplateSyntaxException"/> here, naming the construct and its line.
    /// </summary>
    public static ChatTemplate Load(string source, TimeProvider? time = null)
    {
        var template = new ChatTemplate(source, time);
        template.Probe();
        return template;
    }

    /// <summary>
    /// Renders plain conversations once, so that a construct the engine reaches only while rendering fails now rather
    /// than on a request. What the template itself refuses (<c>raise_exception</c>, a role rule) is its own business.
    /// </summary>
    internal void Probe()
    {
        ChatMessage[][] conversations =
        [
            [new("user", "Hello")],
            [new("user", "Hello"), new("assistant", "Hi."), new("user", "Bye")],
            [new("system", "Be brief."), new("user", "Hello")],
        ];
        foreach (var messages in conversations)
        {
            foreach (var generation in new[] { true, false })
            {
                try
                {
                    Render(messages, new ChatRenderOptions { AddGenerationPrompt = generation, BosToken = "<s>", EosToken = "</s>" });
                }
                catch (ChatTemplateException)
                {
                    // The template's own rule (e.g. no system role) or an error Python's Jinja makes too.
                }
            }
        }
    }

    /// <summary>Renders the prompt for <paramref name="messages"/>.</summary>
    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt = true, string? bosToken = null, string? eosToken = null) =>
        Render(messages, new ChatRenderOptions { AddGenerationPrompt = addGenerationPrompt, BosToken = bosToken, EosToken = eosToken });

    /// <summary>
    /// Renders the prompt for <paramref name="messages"/> with transformers' variables: <c>messages</c>, <c>tools</c>,
    /// <c>add_generation_prompt</c>, <c>bos_token</c>, <c>eos_token</c>, and the <c>chat_template_kwargs</c>.
    /// Throws <see cref="ChatTemplateException"/> when the template raises (its message) or fails for these messages.
    /// </summary>
    public string Render(IReadOnlyList<ChatMessage> messages, ChatRenderOptions options)
    {
        if (options.ContinueFinalMessage && options.AddGenerationPrompt)
        {
            throw new ChatTemplateException("continue_final_message and add_generation_prompt cannot both be true: the first continues the last message, the second starts a new one.");
        }
        var vars = new Dictionary<string, object?>
        {
            ["raise_exception"] = (JinjaFunction)RaiseException,
            ["strftime_now"] = (JinjaFunction)StrftimeNow,
            ["namespace"] = (JinjaFunction)Builtins.Namespace,
            ["range"] = (JinjaFunction)Builtins.Range,
            ["dict"] = (JinjaFunction)Builtins.Dict,
            ["bos_token"] = options.BosToken ?? string.Empty,
            ["eos_token"] = options.EosToken ?? string.Empty,
        };
        if (options.Kwargs is not null)
        {
            foreach (var (k, v) in options.Kwargs) vars[k] = FromJson(v);
        }
        vars["messages"] = ToValues(messages);
        if (options.Tools is not null)
        {
            var tools = new List<object?>(options.Tools.Count);
            foreach (var t in options.Tools) tools.Add(FromJson(t));
            vars["tools"] = tools;
        }
        vars["add_generation_prompt"] = options.AddGenerationPrompt;
        var sb = new StringBuilder();
        Limits.StartRender();
        JinjaEvaluator.Execute(_nodes, new Frame(new Frame(null, vars)), sb);
        var rendered = sb.ToString();
        return options.ContinueFinalMessage ? CutAfterFinalMessage(rendered, messages) : rendered;
    }

    /// <summary>transformers' <c>continue_final_message</c>: the text up to the end of the final message's content.</summary>
    private static string CutAfterFinalMessage(string rendered, IReadOnlyList<ChatMessage> messages)
    {
        var final = messages.Count > 0 ? messages[^1].ContentParts is { Count: > 0 } parts ? parts[^1] : messages[^1].Content : null;
        if (final is null) throw new ChatTemplateException("continue_final_message needs a final message with text content.");
        var stripped = final.Trim();
        var at = rendered.LastIndexOf(stripped, StringComparison.Ordinal);
        if (at < 0) throw new ChatTemplateException("continue_final_message is set but the final message does not appear in the chat after applying the chat template.");
        var lstripped = final.TrimStart();
        return string.CompareOrdinal(rendered, at, lstripped, 0, lstripped.Length) == 0 && at + lstripped.Length <= rendered.Length
            ? rendered[..(at + lstripped.Length)]
            : rendered[..(at + stripped.Length)];
    }

    private List<object?> ToValues(IReadOnlyList<ChatMessage> messages)
    {
        var list = new List<object?>(messages.Count);
        foreach (var m in messages)
        {
            var d = new Dictionary<string, object?>(4) { ["role"] = m.Role };
            if (m.ContentParts is { } parts && ContentAsParts)
            {
                var items = new List<object?>(parts.Count);
                foreach (var p in parts) items.Add(new Dictionary<string, object?> { ["type"] = "text", ["text"] = p });
                d["content"] = items;
            }
            else
            {
                d["content"] = m.Content;
            }
            if (m.Name is not null) d["name"] = m.Name;
            if (m.ToolCalls is { } calls)
            {
                var items = new List<object?>(calls.Count);
                foreach (var c in calls)
                {
                    items.Add(new Dictionary<string, object?>
                    {
                        ["id"] = c.Id,
                        ["type"] = c.Type,
                        ["function"] = new Dictionary<string, object?> { ["name"] = c.Name, ["arguments"] = ParseArguments(c.Arguments) },
                    });
                }
                d["tool_calls"] = items;
            }
            if (m.ToolCallId is not null) d["tool_call_id"] = m.ToolCallId;
            list.Add(d);
        }
        return list;
    }

    /// <summary>As vLLM hands arguments to templates: the JSON object the client sent as text, parsed (the text when it is no JSON object).</summary>
    private static object? ParseArguments(string arguments)
    {
        try
        {
            using var doc = JsonDocument.Parse(arguments);
            return doc.RootElement.ValueKind == JsonValueKind.Object ? FromJson(doc.RootElement) : arguments;
        }
        catch (JsonException)
        {
            return arguments;
        }
    }

    /// <summary>A JSON value as the template sees it (Python's <c>json.loads</c>: objects keep their key order).</summary>
    public static object? FromJson(JsonElement e)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.Object:
                var d = new Dictionary<string, object?>();
                foreach (var p in e.EnumerateObject()) d[p.Name] = FromJson(p.Value);
                return d;
            case JsonValueKind.Array:
                var l = new List<object?>(e.GetArrayLength());
                foreach (var x in e.EnumerateArray()) l.Add(FromJson(x));
                return l;
            case JsonValueKind.String: return e.GetString();
            case JsonValueKind.True: return true;
            case JsonValueKind.False: return false;
            case JsonValueKind.Number:
                var raw = e.GetRawText();
                return raw.AsSpan().IndexOfAny(".eE") < 0 && e.TryGetInt64(out var n) ? (object)n : e.GetDouble();
            default: return null;
        }
    }

    private static object? RaiseException(List<object?> args, Dictionary<string, object?> kwargs, int line) =>
        throw new ChatTemplateException(args.Count > 0 ? Py.Str(args[0]) : "chat template raised an exception");

    private object? StrftimeNow(List<object?> args, Dictionary<string, object?> kwargs, int line) =>
        args.Count == 1 && args[0] is string format
            ? Strftime.Format(_time.GetLocalNow(), format, line)
            : throw new ChatTemplateRenderException("strftime_now() takes one format string", line);
}
