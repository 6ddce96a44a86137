using Serving.Inference.Chat;
using Xunit;

namespace Serving.Inference.Tests.Chat;

public sealed class ChatTemplateTests
{
    private static readonly ChatMessage[] Conversation = [new("system", "Be kind."), new("user", "Hi!"), new("assistant", "Hello."), new("user", "Bye")];

    [Fact]
    public void DefaultTemplate_RendersChatMlWithGenerationPrompt()
    {
        var text = new ChatTemplate(ChatTemplate.DefaultTemplate).Render(Conversation[..2]);
        Assert.Equal("<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n", text);
    }

    [Fact]
    public void LlamaStyleTemplate_LoopIfElifWhitespaceControlAndTokens()
    {
        const string source =
            "{{ bos_token }}{% for message in messages %}" +
            "{% if message['role'] == 'system' %}{{ '[SYS] ' + message['content'] | trim }}\n" +
            "{%- elif message.role == 'user' -%}\n  [U] {{ message['content'] }}\n" +
            "{%- else %}[A] {{ message['content'] + eos_token }}{% endif %}" +
            "{% if not loop.last %}|{% endif %}{% endfor %}" +
            "{% if add_generation_prompt %}[A]{% endif %}";
        var text = new ChatTemplate(source).Render(Conversation, addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>");
        Assert.Equal("<s>[SYS] Be kind.|[U] Hi!|[A] Hello.</s>|[U] Bye[A]", text);
    }

    [Fact]
    public void RaiseException_BecomesChatTemplateException()
    {
        const string source =
            "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" +
            "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
            "{{ message['content'] }}{% endfor %}";
        var template = new ChatTemplate(source);
        Assert.Equal("ab", template.Render([new("user", "a"), new("assistant", "b")]));
        var e = Assert.Throws<ChatTemplateException>(() => template.Render([new("assistant", "a")]));
        Assert.Contains("alternate", e.Message);
    }

    [Fact]
    public void SetAndDefinedAndIndexing_Work()
    {
        const string source =
            "{% set first = messages[0] %}{% if first.role == 'system' %}{% set sys = first.content %}{% endif %}" +
            "{% if sys is defined %}({{ sys }}){% endif %}{{ messages | length }}{{ messages[-1]['content'] }}";
        Assert.Equal("(Be kind.)4Bye", new ChatTemplate(source).Render(Conversation));
        Assert.Equal("1x", new ChatTemplate(source).Render([new("user", "x")]));
    }

    [Fact]
    public void SmolLm2Template_Renders()
    {
        const string source =
            "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}" +
            "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}" +
            "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
        var text = new ChatTemplate(source).Render([new("user", "Hi")]);
        Assert.Equal("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", text);
    }

    [Fact]
    public void Llama2StyleTemplate_SlicesAndStringMethods()
    {
        const string source =
            "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}" +
            "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}" +
            "{% for message in loop_messages %}{% if loop.index0 == 0 and system_message != false %}" +
            "{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}" +
            "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}" +
            "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";
        var text = new ChatTemplate(source).Render([new("system", "Sys"), new("user", " Hi "), new("assistant", "Yo"), new("user", "More")],
            bosToken: "<s>", eosToken: "</s>");
        Assert.Equal("<s>[INST] <<SYS>>\nSys\n<</SYS>>\n\n Hi [/INST] Yo </s><s>[INST] More [/INST]", text);
    }

    [Fact]
    public void UnsupportedSyntax_ThrowsFormatException()
    {
        Assert.Throws<TemplateSyntaxException>(() => new ChatTemplate("{% include 'other.jinja' %}"));
        Assert.Throws<TemplateSyntaxException>(() => new ChatTemplate("{% for m in messages %}"));
    }

    [Fact]
    public void FromCheckpoint_ReadsChatTemplateOrFallsBackToDefault()
    {
        var dir = Path.Combine(Path.GetTempPath(), "chat-template-test-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            Assert.Equal(ChatTemplate.DefaultTemplate, ChatTemplate.FromCheckpoint(dir, out var isDefault).Source);
            Assert.True(isDefault);
            File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"}""");
            var t = ChatTemplate.FromCheckpoint(dir, out isDefault);
            Assert.False(isDefault);
            Assert.Equal("Hi!", t.Render([new("user", "Hi!")]));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
