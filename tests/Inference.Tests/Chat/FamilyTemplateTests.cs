using Serving.Inference.Chat;
using Xunit;

namespace Serving.Inference.Tests.Chat;

/// <summary>
/// The published chat templates of the families (<c>Chat/Templates/*.jinja</c>, sources in its README) rendered for plain
/// system/user/assistant conversations. Each expected string is written out by hand from the template's text under
/// transformers' rendering rules (<c>trim_blocks</c>, <c>lstrip_blocks</c>, <c>-</c> whitespace control,
/// <c>strftime_now</c> reading the local clock, the template's own <c>bos_token</c>); where huggingface.js' Jinja tests
/// render the same template for the same messages, their targets agree with these.
/// </summary>
public sealed class FamilyTemplateTests
{
    private static readonly ChatMessage[] WithSystem = [new("system", "You are a helpful assistant."), new("user", "What is the capital of France?")];
    private static readonly ChatMessage[] MultiTurn = [new("user", "Hello!"), new("assistant", "Hi! How can I help?"), new("user", "Tell me a joke.")];

    private static ChatTemplate Load(string name, TimeProvider? time = null) =>
        new(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Chat", "Templates", name + ".jinja")), time);

    /// <summary>A clock fixed at 4 Dec 2026, 09:30 local time (UTC here), for strftime_now.</summary>
    private sealed class FixedClock : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => new(2026, 12, 4, 9, 30, 0, TimeSpan.Zero);
        public override TimeZoneInfo LocalTimeZone => TimeZoneInfo.Utc;
    }

    [Fact]
    public void Llama32Instruct_SystemAndUser_DatesTheHeaderWithStrftimeNow()
    {
        var text = Load("Llama-3.2-1B-Instruct", new FixedClock()).Render(WithSystem, bosToken: "<|begin_of_text|>", eosToken: "<|eot_id|>");
        Assert.Equal(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 04 Dec 2026\n\n" +
            "You are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is the capital of France?<|eot_id|>" +
            "<|start_header_id|>assistant<|end_header_id|>\n\n", text);
    }

    [Fact]
    public void Llama31Instruct_MultiTurnWithoutSystem_EmptySystemBlockAndFixedDate()
    {
        var text = Load("Llama-3.1-8B-Instruct").Render(MultiTurn, bosToken: "<|begin_of_text|>");
        Assert.Equal(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>" +
            "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi! How can I help?<|eot_id|>" +
            "<|start_header_id|>user<|end_header_id|>\n\nTell me a joke.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", text);
    }

    [Fact]
    public void Llama31Instruct_ContentIsTrimmed()
    {
        var text = Load("Llama-3.1-8B-Instruct").Render([new("system", "  Sys \n"), new("user", "\n Hi  ")], addGenerationPrompt: false, bosToken: "<|begin_of_text|>");
        Assert.Equal(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nSys<|eot_id|>" +
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", text);
    }

    [Fact]
    public void Qwen3_SystemAndUser_ChatMlWithoutThinkingBlock()
    {
        var text = Load("Qwen3-0.6B").Render(WithSystem);
        Assert.Equal("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n", text);
    }

    [Fact]
    public void Qwen3_AssistantBeforeTheLastQuery_RendersPlain()
    {
        var text = Load("Qwen3-0.6B").Render(MultiTurn);
        Assert.Equal(
            "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\nHi! How can I help?<|im_end|>\n" +
            "<|im_start|>user\nTell me a joke.<|im_end|>\n<|im_start|>assistant\n", text);
    }

    [Fact]
    public void Qwen3_FinalAssistantTurn_GetsAThinkBlockAndSplitsReasoningOut()
    {
        // The namespace loop over messages[::-1] finds the last user query; an assistant turn after it (the last
        // message) is rendered with a think block, its reasoning taken out of "<think>...</think>" in the content.
        var template = Load("Qwen3-0.6B");
        Assert.Equal(
            "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHi! How can I help?<|im_end|>\n",
            template.Render(MultiTurn[..2], addGenerationPrompt: false));
        Assert.Equal(
            "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n<think>\nadd them\n</think>\n\n4<|im_end|>\n",
            template.Render([new("user", "2+2?"), new("assistant", "<think>\nadd them\n</think>\n\n4")], addGenerationPrompt: false));
    }

    [Fact]
    public void Phi3Mini_SystemAndUser_EndsWithAssistantTagOrEos()
    {
        var template = Load("Phi-3-mini-4k-instruct");
        Assert.Equal("<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nWhat is the capital of France?<|end|>\n<|assistant|>\n",
            template.Render(WithSystem, eosToken: "<|endoftext|>"));
        Assert.Equal("<|user|>\nHello!<|end|>\n<|assistant|>\nHi! How can I help?<|end|>\n<|user|>\nTell me a joke.<|end|>\n<|endoftext|>",
            template.Render(MultiTurn, addGenerationPrompt: false, eosToken: "<|endoftext|>"));
    }

    [Fact]
    public void Gemma2It_MultiTurn_ModelRoleAndTrimmedContent()
    {
        var text = Load("gemma-2-2b-it").Render([new("user", " Hello! "), MultiTurn[1], MultiTurn[2]], bosToken: "<bos>");
        Assert.Equal(
            "<bos><start_of_turn>user\nHello!<end_of_turn>\n<start_of_turn>model\nHi! How can I help?<end_of_turn>\n" +
            "<start_of_turn>user\nTell me a joke.<end_of_turn>\n<start_of_turn>model\n", text);
    }

    [Fact]
    public void Gemma2It_SystemMessage_IsTheTemplatesOwnRefusal()
    {
        var e = Assert.Throws<ChatTemplateException>(() => Load("gemma-2-2b-it").Render(WithSystem, bosToken: "<bos>"));
        Assert.Equal("System role not supported", e.Message);
    }

    [Fact]
    public void Mistral7BInstructV01_InstTagsAndEosAfterAnswers()
    {
        var template = Load("Mistral-7B-Instruct-v0.1");
        Assert.Equal("<s>[INST] Hello! [/INST]Hi! How can I help?</s> [INST] Tell me a joke. [/INST]", template.Render(MultiTurn, bosToken: "<s>", eosToken: "</s>"));
        var e = Assert.Throws<ChatTemplateException>(() => template.Render(WithSystem, bosToken: "<s>", eosToken: "</s>"));
        Assert.Contains("must alternate", e.Message);
    }

    [Fact]
    public void EveryFamilyTemplate_PassesTheLoadTimeProbe()
    {
        foreach (var file in Directory.GetFiles(Path.Combine(AppContext.BaseDirectory, "Chat", "Templates"), "*.jinja"))
        {
            var dir = Path.Combine(Path.GetTempPath(), "family-template-" + Guid.NewGuid().ToString("N"));
            Directory.CreateDirectory(dir);
            try
            {
                File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), System.Text.Json.JsonSerializer.Serialize(new { chat_template = File.ReadAllText(file) }));
                var t = ChatTemplate.FromCheckpoint(dir, out var isDefault);
                Assert.False(isDefault);
            }
            finally
            {
                Directory.Delete(dir, true);
            }
        }
    }

    [Fact]
    public void TrimAndLstripBlocks_BlockLinesLeaveNoWhitespace()
    {
        const string source = "{% for m in messages %}\n  {% if m.role == 'user' %}\nU: {{ m.content }}\n  {% endif %}\n{% endfor %}\n";
        Assert.Equal("U: a\nU: c\n", new ChatTemplate(source).Render([new("user", "a"), new("assistant", "b"), new("user", "c")]));
    }

    [Fact]
    public void LoopScope_SetInsideALoopStaysThereButNamespaceAttributesCarryOut()
    {
        const string source = "{% set x = 'outer' %}{% set ns = namespace(n=0) %}{% for m in messages %}{% set x = m.role %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ x }} {{ ns.n }}";
        Assert.Equal("outer 2", new ChatTemplate(source).Render([new("user", "a"), new("assistant", "b")]));
    }

    [Fact]
    public void FromCheckpoint_TemplateOutsideTheSubset_IsRefusedAtLoadNamingTheFile()
    {
        var dir = Path.Combine(Path.GetTempPath(), "family-template-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            // A filter the engine lacks: refused at load, naming the file, the filter and the line, not at the first request.
            File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"chat_template": "{% for m in messages %}\n{{ m.content | wordwrap(10) }}{% endfor %}"}""");
            var e = Assert.Throws<FormatException>(() => ChatTemplate.FromCheckpoint(dir, out _));
            Assert.Contains("tokenizer_config.json: the chat template cannot be rendered by this engine", e.Message);
            Assert.Contains("line 2: the filter 'wordwrap' is not supported", e.Message);
            // A construct reached only while rendering (a strftime code the engine lacks) is found by the probe at load.
            File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"chat_template": "{{ strftime_now('%U') }}"}""");
            Assert.Contains("line 1: strftime code '%U' is not supported", Assert.Throws<FormatException>(() => ChatTemplate.FromCheckpoint(dir, out _)).Message);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
