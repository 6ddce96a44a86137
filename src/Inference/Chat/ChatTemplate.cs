using System.Text;
using Serving.Inference.Chat.Jinja;

namespace Serving.Inference.Chat;

/// <summary>One chat message as the template sees it.</summary>
public sealed record ChatMessage(string Role, string Content);

/// <summary>
/// Renders chat messages into a prompt with a Hugging Face chat template (<c>chat_template</c> in
/// <c>tokenizer_config.json</c>) as transformers' <c>apply_chat_template</c> does, interpreted by the Jinja subset those
/// templates use (<c>Jinja/</c>: lexer, parser, expression parser, evaluator, loader). Whitespace as transformers'
/// environment handles it: <c>-</c> control, <c>trim_blocks</c> and <c>lstrip_blocks</c>. Statements:
/// <c>{{ expr }}</c>, <c>{% for x in xs %}</c> / <c>{% for k, v in d|items %}</c> (own scope; <c>loop.index</c>,
/// <c>index0</c>, <c>first</c>, <c>last</c>, <c>length</c>, <c>revindex</c>, <c>previtem</c>, <c>nextitem</c>),
/// <c>{% if %}/{% elif %}/{% else %}</c>, <c>{% set x = expr %}</c> and <c>{% set ns.attr = expr %}</c>, comments.
/// Expressions: literals (strings, integers, booleans, none, lists), variables, <c>.attr</c>, <c>['key']</c>,
/// <c>[i]</c>, slices with steps (<c>xs[::-1]</c>), <c>+ - * % ~</c>, comparisons, <c>and/or/not</c>, <c>in</c>,
/// inline <c>a if c else b</c>, tests (<c>defined undefined none string number mapping sequence iterable boolean true
/// false equalto even odd</c>), filters (<c>trim upper lower title capitalize length count string safe list first last
/// reverse items join default replace select reject tojson</c>), string and dict methods (<c>strip lstrip rstrip upper
/// lower title capitalize startswith endswith replace split get items keys values</c>) and the globals transformers
/// defines: <c>raise_exception</c>, <c>strftime_now</c> (the injected clock's local time), plus <c>namespace</c> and
/// <c>range</c>. Variables: <c>messages</c>, <c>add_generation_prompt</c>, <c>bos_token</c>, <c>eos_token</c>.
/// A checkpoint without a template gets <see cref="DefaultTemplate"/> (ChatML).
/// </summary>
public sealed class ChatTemplate
{
    /// <summary>ChatML, used when a checkpoint has no <c>chat_template</c>.</summary>
    public const string DefaultTemplate =
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}" +
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    private readonly List<Node> _nodes;
    private readonly TimeProvider _time;

    /// <summary>Parses <paramref name="source"/>; throws <see cref="FormatException"/> on syntax outside the subset.</summary>
    /// <param name="time">The clock <c>strftime_now</c> reads (local time, as transformers' <c>datetime.now()</c>); the system clock by default.</param>
    public ChatTemplate(string source, TimeProvider? time = null)
    {
        Source = source;
        _time = time ?? TimeProvider.System;
        _nodes = new JinjaParser(JinjaLexer.Tokenize(source)).ParseBody(out var end);
        if (end is not null) throw new FormatException($"chat template: unexpected '{{% {end} %}}'");
    }

    /// <summary>The template text.</summary>
    public string Source { get; }

    /// <summary>
    /// Reads <c>chat_template</c> from <c>tokenizer_config.json</c> in <paramref name="directory"/> (a string, or a list of
    /// named templates where "default" wins), or returns <see cref="DefaultTemplate"/>. A template this engine cannot
    /// render is refused here, at load, with a <see cref="FormatException"/> naming the file and the construct: it is
    /// parsed, then rendered for a one-user-message and a user/assistant/user conversation (a refusal the template itself
    /// raises for those, such as a role rule, is its own business and not an error).
    /// </summary>
    public static ChatTemplate FromCheckpoint(string directory, out bool isDefault, TimeProvider? time = null)
    {
        var source = TemplateLoader.ReadChatTemplate(directory);
        isDefault = source is null;
        if (source is null) return new ChatTemplate(DefaultTemplate, time);
        var file = Path.Combine(directory, "tokenizer_config.json");
        try
        {
            var template = new ChatTemplate(source, time);
            template.Probe();
            return template;
        }
        catch (FormatException e)
        {
            throw new FormatException($"{file}: chat_template cannot be rendered by this engine: {e.Message}", e);
        }
    }

    /// <summary>Renders plain conversations once, so that a construct outside the subset fails now rather than on a request.</summary>
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
                    Render(messages, generation, "<s>", "</s>");
                }
                catch (ChatTemplateException)
                {
                    // The template's own rule (e.g. no system role): a request that breaks it gets the template's message.
                }
            }
        }
    }

    /// <summary>Renders the prompt for <paramref name="messages"/>.</summary>
    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt = true, string? bosToken = null, string? eosToken = null)
    {
        var list = new List<object?>(messages.Count);
        foreach (var m in messages)
        {
            list.Add(new Dictionary<string, object?> { ["role"] = m.Role, ["content"] = m.Content });
        }
        var scope = new Dictionary<string, object?>
        {
            ["messages"] = list,
            ["add_generation_prompt"] = addGenerationPrompt,
            ["bos_token"] = bosToken ?? string.Empty,
            ["eos_token"] = eosToken ?? string.Empty,
            ["raise_exception"] = (JinjaFunction)RaiseException,
            ["strftime_now"] = (JinjaFunction)StrftimeNow,
            ["namespace"] = (JinjaFunction)Namespace,
            ["range"] = (JinjaFunction)Range,
        };
        var sb = new StringBuilder();
        JinjaEvaluator.Execute(_nodes, scope, sb);
        return sb.ToString();
    }

    private static object? RaiseException(List<object?> args, Dictionary<string, object?> kwargs) =>
        throw new ChatTemplateException(args.Count > 0 ? JinjaEvaluator.ToText(args[0]) : "chat template raised an exception");

    private static object? Namespace(List<object?> args, Dictionary<string, object?> kwargs)
    {
        var ns = new JinjaNamespace();
        foreach (var (key, value) in kwargs) ns[key] = value;
        return ns;
    }

    private static object? Range(List<object?> args, Dictionary<string, object?> kwargs)
    {
        long Arg(int i) => args[i] is long n ? n : throw new FormatException("chat template: range() takes integers");
        var (start, stop) = args.Count switch
        {
            1 => (0L, Arg(0)),
            2 => (Arg(0), Arg(1)),
            _ => throw new FormatException("chat template: range() takes one or two integers"),
        };
        var list = new List<object?>();
        for (var i = start; i < stop; i++) list.Add(i);
        return list;
    }

    private object? StrftimeNow(List<object?> args, Dictionary<string, object?> kwargs) =>
        args.Count == 1 && args[0] is string format
            ? Strftime.Format(_time.GetLocalNow(), format)
            : throw new FormatException("chat template: strftime_now() takes one format string");
}

/// <summary>The chat template rejected the messages (its <c>raise_exception</c>), e.g. roles out of order.</summary>
public sealed class ChatTemplateException(string message) : Exception(message);
