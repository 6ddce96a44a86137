using System.Net;
using System.Text.Json.Nodes;
using Xunit;

namespace Serving.Inference.Node.Tests.Http;

/// <summary>
/// vLLM's chat-template request fields on the demo node: <c>chat_template</c> (compiled once per text),
/// <c>chat_template_kwargs</c>, <c>continue_final_message</c>, content as text parts, <c>name</c>; a template that raises
/// is a 400 with its message, one the engine cannot render a 400 naming the construct and line. The prompt each request
/// ran is checked by its token count against the text written out here, tokenized by the demo's tokenizer.
/// </summary>
public sealed class ChatTemplateHttpTests(EchoFixture fx) : IClassFixture<EchoFixture>
{
    private async Task<(HttpStatusCode Status, JsonObject Json)> ChatAsync(object body)
    {
        using var response = await fx.Server.Http.SendAsync(Sse.Post("v1/chat/completions", body));
        return (response.StatusCode, await Sse.JsonAsync(response));
    }

    private Serving.Inference.Node.Hosting.ModelHost Host =>
        (Serving.Inference.Node.Hosting.ModelHost)fx.Server.Services.GetService(typeof(Serving.Inference.Node.Hosting.ModelHost))!;

    private int Tokens(string text) => fx.Tokenizer.Encode(text, false).Length;

    private async Task AssertPromptAsync(object body, string expected)
    {
        var (status, json) = await ChatAsync(body);
        Assert.True(status == HttpStatusCode.OK, json.ToJsonString());
        Assert.Equal(Tokens(expected), (int)json["usage"]!["prompt_tokens"]!);
    }

    [Fact]
    public async Task ChatTemplate_PerRequestWithKwargsNameAndTextParts_RendersThatTemplate()
    {
        const string template = "{% for m in messages %}[{{ m.role }}{% if m.name is defined %}/{{ m.name }}{% endif %}] {{ m.content }}\n{% endfor %}" +
                                "{% if greeting is defined %}{{ greeting | upper }}{% endif %}{% if add_generation_prompt %}>{% endif %}";
        var body = new
        {
            model = "demo", max_tokens = 1, chat_template = template,
            chat_template_kwargs = new { greeting = "hallo welt" },
            messages = new object[]
            {
                new { role = "user", name = "anna", content = new object[] { new { type = "text", text = "Der Hund" }, new { type = "text", text = "und die Katze" } } },
            },
        };
        await AssertPromptAsync(body, "[user/anna] Der Hund\nund die Katze\nHALLO WELT>");
        var compiled = Host.RequestTemplates.Compiled;
        await AssertPromptAsync(body, "[user/anna] Der Hund\nund die Katze\nHALLO WELT>");
        Assert.Equal(compiled, Host.RequestTemplates.Compiled);
    }

    [Fact]
    public async Task ContinueFinalMessage_PromptEndsInsideTheLastMessage()
    {
        const string template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";
        await AssertPromptAsync(new
        {
            model = "demo", max_tokens = 1, chat_template = template, continue_final_message = true, add_generation_prompt = false,
            messages = new object[] { new { role = "user", content = "Hallo" }, new { role = "assistant", content = "Der Hund" } },
        }, "<user>Hallo</user><assistant>Der Hund");
        var (status, json) = await ChatAsync(new
        {
            model = "demo", max_tokens = 1, continue_final_message = true, add_generation_prompt = true,
            messages = new object[] { new { role = "user", content = "Hallo" } },
        });
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("continue_final_message", (string?)json["error"]!["param"]);
    }

    [Fact]
    public async Task RaiseException_Is400WithTheTemplatesMessage()
    {
        var (status, json) = await ChatAsync(new
        {
            model = "demo", max_tokens = 1,
            chat_template = "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}x",
            messages = new object[] { new { role = "system", content = "Be brief." }, new { role = "user", content = "Hallo" } },
        });
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("System role not supported", (string?)json["error"]!["message"]);
        Assert.Equal("messages", (string?)json["error"]!["param"]);
    }

    [Fact]
    public async Task ChatTemplate_UnsupportedConstruct_Is400NamingItAndTheLine()
    {
        var (status, json) = await ChatAsync(new
        {
            model = "demo", max_tokens = 1, chat_template = "{% for m in messages %}\n{% include 'x.jinja' %}{% endfor %}",
            messages = new object[] { new { role = "user", content = "Hallo" } },
        });
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("chat_template", (string?)json["error"]!["param"]);
        Assert.Contains("line 2: the statement '{% include %}' is not supported", (string?)json["error"]!["message"]);
    }

    [Fact]
    public async Task NodeChatTemplateOption_OverridesTheCheckpointsTemplate()
    {
        var file = Path.Combine(Path.GetTempPath(), "node-template-" + Guid.NewGuid().ToString("N") + ".jinja");
        await File.WriteAllTextAsync(file, "{% for m in messages %}{{ m.role | upper }}: {{ m.content }}\n{% endfor %}");
        try
        {
            await using var node = await NodeServer.StartAsync(new Dictionary<string, string?>
            {
                ["Node:ModelPath"] = EchoFixture.Demo,
                ["Node:ModelId"] = "demo",
                ["Node:MaxContext"] = "128",
                ["Node:MaxBatch"] = "1",
                ["Node:ChatTemplate"] = file,
            });
            using var response = await node.Http.SendAsync(Sse.Post("v1/chat/completions",
                new { model = "demo", max_tokens = 1, messages = new object[] { new { role = "user", content = "Der Hund" } } }));
            var json = await Sse.JsonAsync(response);
            Assert.True(response.StatusCode == HttpStatusCode.OK, json.ToJsonString());
            Assert.Equal(Tokens("USER: Der Hund\n"), (int)json["usage"]!["prompt_tokens"]!);
        }
        finally
        {
            File.Delete(file);
        }
    }
}
