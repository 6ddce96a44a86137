using System.Text;
using Serving.Inference.Chat.Jinja;

namespace Serving.Inference.Chat;

/// <summary>One chat message as the template sees it.</summary>
public sealed record ChatMessage(string Role, string Content);

/// <summary>
/// Renders chat messages into a prompt with a Hugging Face chat template (<c>chat_template</c> in
/// <c>tokenizer_config.json</c>), interpreted by a small Jinja subset (<c>Jinja/</c>: lexer, parser, evaluator, loader):
/// <c>{{ expr }}</c>, <c>{% for x in xs %}</c>
/// (with <c>loop.index</c>, <c>index0</c>, <c>first</c>, <c>last</c>), <c>{% if %}/{% elif %}/{% else %}</c>,
/// <c>{% set x = expr %}</c>, comments, <c>-</c> whitespace control; expressions with literals, variables,
/// <c>.attr</c> and <c>['key']</c>/<c>[i]</c> access, <c>+</c> and <c>~</c>, comparisons, <c>and/or/not</c>,
/// <c>in</c>, <c>is (not) defined/none</c>, slices <c>xs[1:]</c>, filters <c>trim</c>, <c>length</c>, <c>upper</c>,
/// <c>lower</c>, string methods <c>strip/lstrip/rstrip/upper/lower/startswith/endswith/replace</c>, <c>dict.get</c>,
/// and <c>raise_exception(msg)</c>. Variables: <c>messages</c>, <c>add_generation_prompt</c>, <c>bos_token</c>, <c>eos_token</c>.
/// A checkpoint without a template gets <see cref="DefaultTemplate"/> (ChatML).
/// </summary>
public sealed class ChatTemplate
{
    /// <summary>ChatML, used when a checkpoint has no <c>chat_template</c>.</summary>
    public const string DefaultTemplate =
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}" +
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    private readonly List<Node> _nodes;

    /// <summary>Parses <paramref name="source"/>; throws <see cref="FormatException"/> on syntax outside the subset.</summary>
    public ChatTemplate(string source)
    {
        Source = source;
        _nodes = new JinjaParser(JinjaLexer.Tokenize(source)).ParseBody(out var end);
        if (end is not null) throw new FormatException($"chat template: unexpected '{{% {end} %}}'");
    }

    /// <summary>The template text.</summary>
    public string Source { get; }

    /// <summary>
    /// Reads <c>chat_template</c> from <c>tokenizer_config.json</c> in <paramref name="directory"/> (a string, or a list of
    /// named templates where "default" wins), or returns <see cref="DefaultTemplate"/>.
    /// </summary>
    public static ChatTemplate FromCheckpoint(string directory, out bool isDefault)
    {
        var source = TemplateLoader.ReadChatTemplate(directory);
        isDefault = source is null;
        return new ChatTemplate(source ?? DefaultTemplate);
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
        };
        var sb = new StringBuilder();
        JinjaEvaluator.Execute(_nodes, scope, sb);
        return sb.ToString();
    }
}

/// <summary>The chat template rejected the messages (its <c>raise_exception</c>), e.g. roles out of order.</summary>
public sealed class ChatTemplateException(string message) : Exception(message);
