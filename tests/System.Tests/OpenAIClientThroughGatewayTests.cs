using System.ClientModel;
using System.Text;
using OpenAI;
using OpenAI.Chat;
using Serving.System.Tests.Infrastructure;

namespace Serving.System.Tests;

/// <summary>One cluster (redis-server, gateway, two real nodes) shared by the class.</summary>
public sealed class ClusterFixture : IAsyncLifetime
{
    public Cluster Cluster { get; private set; } = null!;

    public async Task InitializeAsync() => Cluster = await Cluster.StartAsync();

    public Task DisposeAsync()
    {
        Cluster?.Dispose(); // null when the start failed (its processes were already stopped)
        return Task.CompletedTask;
    }
}

/// <summary>The official OpenAI .NET client, unmodified, through the gateway to real nodes.</summary>
public sealed class OpenAIClientThroughGatewayTests(ClusterFixture fixture) : IClassFixture<ClusterFixture>
{
    private ChatClient Chat(string key = Cluster.TenantKey) =>
        new OpenAIClient(new ApiKeyCredential(key), new OpenAIClientOptions { Endpoint = new Uri(fixture.Cluster.GatewayUrl + "/v1") })
            .GetChatClient(Cluster.Model);

    private static ChatCompletionOptions Greedy(int maxTokens) => new() { Temperature = 0f, MaxOutputTokenCount = maxTokens };

    [Fact]
    public async Task Chat_ThroughGateway_AnswersWithUsage()
    {
        ChatCompletion completion = await Chat().CompleteChatAsync([new UserChatMessage("Tell me a fortune")], Greedy(16));

        Assert.Equal(ChatMessageRole.Assistant, completion.Role);
        Assert.Equal(Cluster.Model, completion.Model);
        Assert.StartsWith("chatcmpl-", completion.Id);
        Assert.NotEmpty(completion.Content);
        Assert.False(string.IsNullOrWhiteSpace(completion.Content[0].Text));
        Assert.InRange(completion.Usage.OutputTokenCount, 1, 16);
    }

    [Fact]
    public async Task ChatStreaming_ThroughGateway_SameTextAsNonStreamed_UsageArrives()
    {
        ChatMessage[] messages = [new UserChatMessage("Stream me a fortune")];
        ChatCompletion whole = await Chat().CompleteChatAsync(messages, Greedy(24));

        var text = new StringBuilder();
        int updates = 0;
        ChatTokenUsage? usage = null;
        ChatFinishReason? finish = null;
        await foreach (var update in Chat().CompleteChatStreamingAsync(messages, Greedy(24)))
        {
            updates++;
            foreach (var part in update.ContentUpdate) text.Append(part.Text);
            usage ??= update.Usage;
            finish ??= update.FinishReason;
        }

        Assert.True(updates > 2, $"{updates} updates: not streamed token by token");
        // Greedy on either node gives the same text: the stream arrived whole and in order.
        Assert.Equal(whole.Content[0].Text, text.ToString());
        Assert.Equal(whole.FinishReason, finish);
        Assert.NotNull(usage);
        Assert.Equal(whole.Usage.OutputTokenCount, usage!.OutputTokenCount);
    }

    [Fact]
    public async Task Client_BadKey_GetsAuthenticationError()
    {
        var e = await Assert.ThrowsAsync<ClientResultException>(() => Chat("sk-wrong").CompleteChatAsync([new UserChatMessage("hi")], Greedy(4)));
        Assert.Equal(401, e.Status);
    }

    [Fact]
    public async Task BaseRequests_SpreadOverBothNodes()
    {
        int[] before = fixture.Cluster.Nodes.Select(Cluster.ReceivedPosts).ToArray();
        var chat = Chat();
        await Task.WhenAll(Enumerable.Range(0, 24).Select(_ => chat.CompleteChatAsync([new UserChatMessage("hi")], Greedy(24))));
        int[] after = fixture.Cluster.Nodes.Select(Cluster.ReceivedPosts).ToArray();
        Assert.Equal(24, after.Sum() - before.Sum());
        Assert.All(after.Zip(before, (a, b) => a - b), d => Assert.True(d > 0, $"a node got nothing: [{string.Join(",", after.Zip(before, (a, b) => a - b))}]"));
    }
}
