using System.Text.Json;
using Serving.Inference.Chat;
using Xunit;

namespace Serving.Inference.Tests.Chat;

/// <summary>
/// The Jinja constructs published templates use, each against a string written out by hand from Jinja's and Python's
/// documented behaviour (the corpus test checks the same engine against jinja2 itself).
/// </summary>
public sealed class JinjaEngineTests
{
    private static readonly ChatMessage[] Hello = [new("user", "Hello")];

    private static string Render(string source, IReadOnlyList<ChatMessage>? messages = null, ChatRenderOptions? options = null) =>
        new ChatTemplate(source).Render(messages ?? Hello, options ?? new ChatRenderOptions());

    [Theory]
    [InlineData("{% for x in nothing %}x{% endfor %}|{{ nothing }}|{{ nothing is defined }}|{{ nothing | default('d') }}|{{ nothing | length }}", "||False|d|0")]
    [InlineData("{{ messages[0].missing is undefined }}|{{ messages[5] is defined }}|{{ none.attr is defined }}", "True|False|False")]
    [InlineData("{% if nothing %}y{% else %}n{% endif %}{{ nothing == none }}{{ 'a' if nothing else 'b' }}", "nFalseb")]
    public void Undefined_IteratesEmptyPrintsEmptyAndTestsFalse(string source, string expected) => Assert.Equal(expected, Render(source));

    [Fact]
    public void Undefined_AttributeOfUndefined_FailsAsJinjaDoes()
    {
        var e = Assert.Throws<ChatTemplateRenderException>(() => Render("line one\n{{ nothing.attr }}"));
        Assert.Equal(2, e.Line);
    }

    [Theory]
    [InlineData("{% macro greet(name, greeting='Hi', punct='!') %}{{ greeting }} {{ name }}{{ punct }}{% endmacro %}{{ greet('Ann') }} {{ greet('Bob', punct='?') }} {{ greet(greeting='Yo', name='Cy') }}", "Hi Ann! Hi Bob? Yo Cy!")]
    [InlineData("{% set ns = namespace(count=0, last=none) %}{% for m in ['a', 'b'] %}{% set ns.count = ns.count + 1 %}{% set ns.last = m %}{% endfor %}{{ ns.count }}{{ ns.last }}", "2b")]
    [InlineData("{{ {'a': [1, 2]} | tojson(indent=2) }}", "{\n  \"a\": [\n    1,\n    2\n  ]\n}")]
    [InlineData("{{ {'a': 'é', 'b': none, 'c': true} | tojson }}", "{\"a\": \"é\", \"b\": null, \"c\": true}")]
    [InlineData("{{ [{'n': 'x'}, {'n': 'y'}] | map(attribute='n') | join(',') }}", "x,y")]
    [InlineData("{{ 'abc'.upper() if true else 'no' }}{{ range(3) | list | join('-', ) }}", "ABC0-1-2")]
    [InlineData("{{ [1, 2, 3, 4][1:3] }}{{ 'hello'[::-1] }}{{ [1, 2, 3][-1] }}", "[2, 3]olleh3")]
    [InlineData("{% for x in [1, 2, 3] %}{{ loop.previtem | default('^') }}{{ x }}{{ loop.nextitem | default('$') }};{% endfor %}", "^12;123;23$;")]
    [InlineData("{% set block %}A{{ 1 + 1 }}B{% endset %}{{ block | lower }}", "a2b")]
    [InlineData("{% for x in range(10) %}{% if x == 1 %}{% continue %}{% endif %}{% if x == 3 %}{% break %}{% endif %}{{ x }}{% endfor %}", "02")]
    [InlineData("{{ 'Hello World'.split(' ') }}{{ ' x '.strip() }}{{ 'a-b'.replace('-', '+') }}{{ 'ab'.startswith('a') }}{{ '{} and {}'.format(1, 'x') }}", "['Hello', 'World']xa+bTrue1 and x")]
    [InlineData("{{ 7 // 2 }} {{ 7 / 2 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 1.0 }} {{ [1] + [2] }} {{ 'ab' * 2 }}", "3 3.5 2 1024 1.0 [1, 2] abab")]
    [InlineData("{{ {'k': 'v'} }} {{ none }} {{ true }} {{ [none, 'it\\'s'] }}", "{'k': 'v'} None True [None, \"it's\"]")]
    [InlineData("{{ [3, 1, 2] | sort | first }}{{ ['a', 'A', 'b'] | unique | length }}{{ 'hi' | capitalize }}{{ 'x y' | title }}", "12HiX Y")]
    [InlineData("{{ [{'r': 'u'}, {'r': 'a'}] | selectattr('r', 'equalto', 'a') | list | length }}{{ [1, 2, 3] | select('odd') | list }}{{ [1, none] | reject('none') | list }}", "1[1, 3][1]")]
    [InlineData("{% for k, v in {'a': 1, 'b': 2} | items %}{{ k }}={{ v }};{% endfor %}{% for k, v in {'c': 3}.items() %}{{ k }}{{ v }}{% endfor %}", "a=1;b=2;c3")]
    public void Construct_RendersAsJinjaDoes(string source, string expected) => Assert.Equal(expected, Render(source));

    [Fact]
    public void Whitespace_TrimAndLstripBlocksAndDashControl()
    {
        const string source = "{% for m in messages %}\n    {% if true %}\n  [{{ m.content }}]\n    {% endif %}\n{% endfor %}\n{{- '|' -}}\n   end";
        Assert.Equal("  [Hello]\n|end", Render(source));
    }

    [Fact]
    public void RaiseException_IsAChatTemplateExceptionWithTheTemplatesMessage()
    {
        var e = Assert.Throws<ChatTemplateException>(() => Render("{{ raise_exception('Only user and assistant roles are supported!') }}"));
        Assert.Equal("Only user and assistant roles are supported!", e.Message);
        Assert.IsNotType<ChatTemplateRenderException>(e);
    }

    [Theory]
    [InlineData("{% extends 'base.jinja' %}", "line 1: the statement '{% extends %}' is not supported")]
    [InlineData("a\nb\n{{ x | wordwrap }}", "line 3: the filter 'wordwrap' is not supported")]
    [InlineData("\n{{ x is escaped_thing }}", "line 2: the test 'escaped_thing' is not supported")]
    [InlineData("{{ x.encode() }}", "line 1: the method '.encode()' is not supported")]
    [InlineData("{{ lipsum() }}", "line 1: call of 'lipsum()'")]
    [InlineData("{% for x in xs recursive %}{% endfor %}", "line 1: recursive for loops are not supported")]
    public void Unsupported_IsRefusedAtCompileNamingConstructAndLine(string source, string message) =>
        Assert.Contains(message, Assert.Throws<TemplateSyntaxException>(() => ChatTemplate.Load(source)).Message);

    [Fact]
    public void Render_ToolsToolCallsAndToolResults_ReachTheTemplateAsTransformersPassesThem()
    {
        const string source =
            "{% for t in tools %}{{ t.function.name }}:{{ t.function.parameters | tojson }}\n{% endfor %}" +
            "{% for m in messages %}{{ m.role }}{% if m.name is defined %}({{ m.name }}){% endif %}:" +
            "{% if m.tool_calls %}{% for c in m.tool_calls %}{{ c.id }} {{ c.function.name }} {{ c.function.arguments.city }} {{ c.function.arguments | tojson }}{% endfor %}" +
            "{% elif m.tool_call_id is defined %}[{{ m.tool_call_id }}] {{ m.content }}{% else %}{{ m.content }}{% endif %}{{ '\\n' }}{% endfor %}";
        using var tools = JsonDocument.Parse("""[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]""");
        ChatMessage[] messages =
        [
            new("user", "Weather?") { Name = "ann" },
            new("assistant", null) { ToolCalls = [new ChatToolCall("call_1", "get_weather", """{"city": "Zürich"}""")] },
            new("tool", "21 C") { ToolCallId = "call_1" },
        ];
        var text = Render(source, messages, new ChatRenderOptions { Tools = [.. tools.RootElement.EnumerateArray()] });
        Assert.Equal(
            "get_weather:{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}}\n" +
            "user(ann):Weather?\nassistant:call_1 get_weather Zürich {\"city\": \"Zürich\"}\ntool:[call_1] 21 C\n", text);
    }

    [Fact]
    public void Render_ChatTemplateKwargs_AreTemplateVariables()
    {
        using var kwargs = JsonDocument.Parse("""{"enable_thinking": false, "n": 2}""");
        var options = new ChatRenderOptions { Kwargs = kwargs.RootElement.EnumerateObject().ToDictionary(p => p.Name, p => p.Value) };
        Assert.Equal("no-think 3", Render("{{ 'think' if enable_thinking is not defined or enable_thinking else 'no-think' }} {{ n + 1 }}", options: options));
    }

    [Fact]
    public void Render_ContinueFinalMessage_EndsAtTheLastMessagesText()
    {
        var messages = new ChatMessage[] { new("user", "Hi"), new("assistant", "The answer is") };
        var text = new ChatTemplate(ChatTemplate.DefaultTemplate).Render(messages, new ChatRenderOptions { AddGenerationPrompt = false, ContinueFinalMessage = true });
        Assert.Equal("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nThe answer is", text);
        Assert.Throws<ChatTemplateException>(() => new ChatTemplate(ChatTemplate.DefaultTemplate).Render(messages, new ChatRenderOptions { ContinueFinalMessage = true }));
    }

    [Fact]
    public void Render_TextParts_AListForTemplatesThatWalkContentJoinedOtherwise()
    {
        var message = new ChatMessage("user", "a\nb") { ContentParts = ["a", "b"] };
        var walking = new ChatTemplate("{% for m in messages %}{% for part in m.content %}<{{ part.text }}>{% endfor %}{% endfor %}");
        Assert.True(walking.ContentAsParts);
        Assert.Equal("<a><b>", walking.Render([message], new ChatRenderOptions()));
        var plain = new ChatTemplate("{% for m in messages %}[{{ m.content }}]{% endfor %}");
        Assert.False(plain.ContentAsParts);
        Assert.Equal("[a\nb]", plain.Render([message], new ChatRenderOptions()));
    }

    [Fact]
    public void FromCheckpoint_ChatTemplateJinjaWinsOverTokenizerConfig_AndNamedListPicksDefault()
    {
        var dir = Path.Combine(Path.GetTempPath(), "jinja-source-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"),
                """{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D{{ messages | length }}"}]}""");
            Assert.Equal("D1", ChatTemplate.FromCheckpoint(dir, out var isDefault).Render(Hello));
            Assert.False(isDefault);
            Assert.Equal(["tool_use", "default"], ChatTemplate.NamedTemplates(dir).Keys);
            File.WriteAllText(Path.Combine(dir, "chat_template.jinja"), "J{{ messages[0].content }}");
            Assert.Equal("JHello", ChatTemplate.FromCheckpoint(dir, out _).Render(Hello));
            var custom = Path.Combine(dir, "custom.jinja");
            File.WriteAllText(custom, "C");
            Assert.Equal("C", ChatTemplate.FromCheckpoint(dir, out _, overridePath: custom).Render(Hello));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Theory]
    [InlineData("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "macros nested more than 64 deep")]
    [InlineData("{% for i in range(1100) %}{% for j in range(1100) %}{% endfor %}{% endfor %}", "more than 1000000 loop iterations")]
    [InlineData("{{ range(1000000) | length }}", "more than the 100000 the sandbox allows")]
    [InlineData("{% set ns = namespace() %}{% set ns.self = ns %}{{ ns }}", "nested too deeply")]
    public void HostileTemplate_IsStoppedWithARenderError(string source, string message) =>
        Assert.Contains(message, Assert.Throws<ChatTemplateRenderException>(() => Render(source)).Message);

    [Fact]
    public void DeeplyNestedExpression_IsRefusedAtCompile() =>
        Assert.Contains("nested too deeply", Assert.Throws<TemplateSyntaxException>(() => new ChatTemplate("{{ " + new string('(', 5000) + "1" + new string(')', 5000) + " }}")).Message);
}
