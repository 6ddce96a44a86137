using System.ClientModel;
using System.Text;
using OpenAI;
using OpenAI.Chat;
using Xunit;

namespace Serving.Inference.Node.Tests.Http;

/// <summary>The official OpenAI .NET client, unmodified, against the node on loopback.</summary>
public sealed class OpenAIClientTests(SharedNode node) : IClassFixture<SharedNode>
{
    private OpenAIClient Client => new(new ApiKeyCredential("unused"), new OpenAIClientOptions { Endpoint = new Uri(node.Server.Address, "v1") });

    private static ChatCompletionOptions Greedy(int maxTokens) => new() { Temperature = 0f, MaxOutputTokenCount = maxTokens };

    [Fact]
    public async Task CompleteChat_ReturnsAssistantMessageWithUsage()
    {
        var chat = Client.GetChatClient(NodeServer.ModelId);
        ChatCompletion completion = await chat.CompleteChatAsync([new SystemChatMessage("Be brief."), new UserChatMessage("Hello there")], Greedy(6));

        Assert.Equal(ChatMessageRole.Assistant, completion.Role);
        Assert.Equal(NodeServer.ModelId, completion.Model);
        Assert.StartsWith("chatcmpl-", completion.Id);
        Assert.Contains(completion.FinishReason, new[] { ChatFinishReason.Length, ChatFinishReason.Stop });
        Assert.InRange(completion.Usage.OutputTokenCount, 1, 6);
        Assert.True(completion.Usage.InputTokenCount > 10);
        Assert.Equal(completion.Usage.InputTokenCount + completion.Usage.OutputTokenCount, completion.Usage.TotalTokenCount);
    }

    [Fact]
    public async Task CompleteChatStreaming_TextEqualsNonStreamingAndUsageArrives()
    {
        var chat = Client.GetChatClient(NodeServer.ModelId);
        ChatMessage[] messages = [new UserChatMessage("Stream me something")];
        ChatCompletion whole = await chat.CompleteChatAsync(messages, Greedy(12));

        var options = Greedy(12);
        var text = new StringBuilder();
        ChatFinishReason? finish = null;
        ChatTokenUsage? usage = null;
        var updates = 0;
        await foreach (var update in chat.CompleteChatStreamingAsync(messages, options))
        {
            updates++;
            foreach (var part in update.ContentUpdate) text.Append(part.Text);
            finish ??= update.FinishReason;
            usage ??= update.Usage;
        }

        Assert.True(updates > 2);
        Assert.Equal(whole.Content.Count == 0 ? string.Empty : whole.Content[0].Text, text.ToString());
        Assert.Equal(whole.FinishReason, finish);
        Assert.NotNull(usage); // the client sets stream_options.include_usage
        Assert.Equal(whole.Usage.OutputTokenCount, usage!.OutputTokenCount);
    }

    /// <summary>
    /// OpenAI 2.15 keeps its legacy completions client internal, so the request goes through the official client's own
    /// public pipeline (its authentication, headers and error handling).
    /// </summary>
    [Fact]
    public async Task LegacyCompletion_ThroughTheClientPipeline_Works()
    {
        var pipeline = Client.Pipeline;
        using var message = pipeline.CreateMessage();
        message.Request.Method = "POST";
        message.Request.Uri = new Uri(node.Server.Address, "v1/completions");
        message.Request.Headers.Set("Content-Type", "application/json");
        message.Request.Content = BinaryContent.Create(BinaryData.FromObjectAsJson(new { model = NodeServer.ModelId, prompt = "Once", max_tokens = 4, temperature = 0, ignore_eos = true }));
        await pipeline.SendAsync(message);
        Assert.Equal(200, message.Response!.Status);
        var json = System.Text.Json.Nodes.JsonNode.Parse(message.Response.Content.ToString())!;
        Assert.Equal(4, (int)json["usage"]!["completion_tokens"]!);
        Assert.Equal("length", (string)json["choices"]![0]!["finish_reason"]!);
    }

    [Fact]
    public async Task ListModels_ContainsTheBase()
    {
        var models = await Client.GetOpenAIModelClient().GetModelsAsync();
        Assert.Contains(models.Value, m => m.Id == NodeServer.ModelId);
    }

    [Fact]
    public async Task UnknownModel_ThrowsClientResultExceptionWith404()
    {
        var chat = Client.GetChatClient("missing-model");
        var e = await Assert.ThrowsAsync<ClientResultException>(() => chat.CompleteChatAsync([new UserChatMessage("x")], Greedy(2)));
        Assert.Equal(404, e.Status);
        Assert.Contains("missing-model", e.Message);
    }

    [Fact]
    public async Task InvalidTemperature_ThrowsClientResultExceptionWith400()
    {
        var chat = Client.GetChatClient(NodeServer.ModelId);
        var e = await Assert.ThrowsAsync<ClientResultException>(() => chat.CompleteChatAsync([new UserChatMessage("x")], new ChatCompletionOptions { Temperature = 5f }));
        Assert.Equal(400, e.Status);
        Assert.Contains("temperature", e.Message);
    }
}
