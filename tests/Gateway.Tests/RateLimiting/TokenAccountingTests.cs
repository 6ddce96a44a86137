using System.Net;
using System.Text.Json;
using Serving.Gateway.Tests.Infrastructure;

namespace Serving.Gateway.Tests.RateLimiting;

/// <summary>
/// Reserve → settle → refund through the real gateway (scripted fake node, redis-server, the budget's clock frozen so
/// every number is exact): a refusal costs nothing, a completed request exactly its usage, a cancelled stream what it
/// generated, a reservation never more than the model's context allows.
/// </summary>
[Collection(RedisCollection.Name)]
public sealed class TokenAccountingTests(RedisFixture redis)
{
    /// <summary>The reservation as the gateway README states it (restated here, not called).</summary>
    internal static long Reservation(int bodyBytes, int maxTokens, int n, int maxModelLen)
    {
        long prompt = (bodyBytes + 3) / 4, perChoice = Math.Max(0, maxTokens);
        if (maxModelLen > 0)
        {
            prompt = Math.Min(prompt, maxModelLen - 1);
            perChoice = Math.Min(perChoice, maxModelLen - prompt);
        }
        return prompt + Math.Max(1, n) * perChoice;
    }

    [Theory]
    [InlineData(400)]
    [InlineData(404)]
    [InlineData(422)]
    [InlineData(503)]
    public async Task RefusedByTheNode_LeavesTheBucketWhereItWas(int status)
    {
        await using var h = await AccountingHarness.StartAsync(redis.ConnectionString, 6000);
        var body = AccountingHarness.Body(chat: true, "hello", new { max_tokens = 50, x_fake_status = status });
        var (got, text, _) = await h.SendAsync(chat: true, body);
        Assert.Equal(status, got);
        Assert.Contains("refused by script", text);
        var (reserved, charged) = await h.SettledAsync();
        Assert.Equal(Reservation(body.Length, 50, 1, 512), reserved);
        Assert.Equal(0, charged);
        Assert.Equal(6000, h.Available);
    }

    [Theory]
    [InlineData(true, false)]
    [InlineData(false, false)]
    [InlineData(true, true)]
    [InlineData(false, true)]
    public async Task Completed_ChargedExactlyItsUsage(bool chat, bool stream)
    {
        await using var h = await AccountingHarness.StartAsync(redis.ConnectionString, 6000);
        var body = AccountingHarness.Body(chat, "hello there", new { max_tokens = 100, stream, x_fake_tokens = 7, x_fake_prompt_tokens = 11 });
        var (status, _, _) = await h.SendAsync(chat, body);
        Assert.Equal(200, status);
        var (reserved, charged) = await h.SettledAsync();
        Assert.Equal(Reservation(body.Length, 100, 1, 512), reserved);
        Assert.Equal(11 + 7, charged);
        Assert.Equal(6000 - 18, h.Available);
    }

    [Fact]
    public async Task NFour_ChargedFourCompletionsAndThePromptOnce()
    {
        await using var h = await AccountingHarness.StartAsync(redis.ConnectionString, 6000);
        var body = AccountingHarness.Body(chat: false, "hello", new { max_tokens = 20, n = 4, x_fake_tokens = 5, x_fake_prompt_tokens = 2 });
        var (status, text, _) = await h.SendAsync(chat: false, body);
        Assert.Equal(200, status);
        Assert.Equal(4, JsonDocument.Parse(text).RootElement.GetProperty("choices").GetArrayLength());
        var (reserved, charged) = await h.SettledAsync();
        Assert.Equal(Reservation(body.Length, 20, 4, 512), reserved);
        Assert.Equal(2 + 4 * 5, charged);
        Assert.Equal(6000 - 22, h.Available);
    }

    [Fact]
    public async Task AlignmentCandidates_ChargedInFull_TheDebtDelaysTheNextRequestExactly()
    {
        await using var h = await AccountingHarness.StartAsync(redis.ConnectionString, 600); // 10 tokens a second
        var body = AccountingHarness.Body(chat: true, "hi", new { max_tokens = 10, x_fake_tokens = 10, x_fake_generated = 1000 });
        await h.ExpectAsync(200, chat: true, body);
        Assert.Equal(3 + 1000, (await h.SettledAsync()).Charged);
        Assert.Equal(600 - 1003, h.Available);

        var next = AccountingHarness.Body(chat: true, "hi", new { max_tokens = 10 });
        long need = Reservation(next.Length, 10, 1, 512);
        var (status, text, headers) = await h.SendAsync(chat: true, next);
        Assert.Equal(429, status);
        Assert.Equal("rate_limit_exceeded", Chat.ErrorCode(text));
        double seconds = (need + 403) / 10.0;
        Assert.Equal(TimeSpan.FromSeconds(Math.Ceiling(seconds)), headers.RetryAfter?.Delta);
        Assert.False(h.HasUnreadSettlement);

        h.Clock.Advance(TimeSpan.FromSeconds(seconds) - TimeSpan.FromMilliseconds(100));
        await h.ExpectAsync(429, chat: true, next);
        h.Clock.Advance(TimeSpan.FromMilliseconds(100));
        await h.ExpectAsync(200, chat: true, next);
        Assert.Equal(3 + 4, (await h.SettledAsync()).Charged);
    }

    [Fact]
    public async Task MaxTokensBeyondTheContext_ReservesAtMostTheContext_ARefusalRefundsIt()
    {
        await using var h = await AccountingHarness.StartAsync(redis.ConnectionString, 600, maxModelLen: 512);
        // Unclamped this would be ~10^9 tokens: a budget of 600 could never admit it. The node refuses it (as the real
        // node does: "at most 511 can be generated").
        var body = AccountingHarness.Body(chat: false, "The cat", new { max_tokens = 1_000_000_000, x_fake_status = 400 });
        var (status, _, _) = await h.SendAsync(chat: false, body);
        Assert.Equal(400, status);
        var (reserved, charged) = await h.SettledAsync();
        Assert.Equal(512, reserved);
        Assert.Equal(0, charged);
        Assert.Equal(600, h.Available);

        // A second such request reads the node's 400 too (not a 429: nothing was kept).
        await h.ExpectAsync(400, chat: false, body);
        Assert.Equal((512L, 0L), await h.SettledAsync());

        // Admitted at the clamp, charged what it used.
        var used = AccountingHarness.Body(chat: false, "The cat", new { max_tokens = 1_000_000_000, x_fake_tokens = 30, x_fake_prompt_tokens = 2 });
        await h.ExpectAsync(200, chat: false, used);
        Assert.Equal((512L, 32L), await h.SettledAsync());
    }

    [Fact]
    public async Task CostBeyondTheWholeBudget_400SaysSo_NothingReachesTheNode()
    {
        await using var h = await AccountingHarness.StartAsync(redis.ConnectionString, 600, maxModelLen: 512);
        var body = AccountingHarness.Body(chat: true, "hi", new { max_tokens = 400, n = 2 });
        var (status, text, headers) = await h.SendAsync(chat: true, body);
        Assert.Equal(400, status);
        var error = JsonDocument.Parse(text).RootElement.GetProperty("error");
        Assert.Equal("token_budget_exceeded", error.GetProperty("code").GetString());
        Assert.Equal("max_tokens", error.GetProperty("param").GetString());
        Assert.Contains($"up to {Reservation(body.Length, 400, 2, 512)} tokens", error.GetProperty("message").GetString());
        Assert.Contains("(600)", error.GetProperty("message").GetString());
        Assert.Null(headers.RetryAfter);
        Assert.Empty(h.Node.Received);
        Assert.Equal(600, h.Available);
    }

    [Theory]
    [InlineData(true, 3)]
    [InlineData(false, 3)]
    [InlineData(true, 1)]
    public async Task CancelledStream_ChargedWhatWasGenerated_RefundsTheRest(bool chat, int chunks)
    {
        await using var h = await AccountingHarness.StartAsync(redis.ConnectionString, 6000);
        var body = AccountingHarness.Body(chat, "tell me", new { max_tokens = 100, n = 2, stream = true, x_fake_tokens = 50, x_fake_prompt_tokens = 9, x_fake_hang_after = chunks });
        var events = await h.SendAndCancelAsync(chat, body, chunks);
        Assert.Equal(chunks, events.Count);
        Assert.All(events, e => Assert.DoesNotContain("usage", e)); // the client did not ask for usage
        var (reserved, charged) = await h.SettledAsync();
        Assert.Equal(Reservation(body.Length, 100, 2, 512), reserved);
        Assert.Equal(9 + 2 * chunks, charged);
        Assert.Equal(6000 - charged, h.Available);
        await h.Node.CancelSeen.Task.WaitAsync(TimeSpan.FromSeconds(15));
    }

    [Fact]
    public async Task StreamCancelledBeforeTheFirstToken_RefundedInFull()
    {
        await using var h = await AccountingHarness.StartAsync(redis.ConnectionString, 6000);
        var body = AccountingHarness.Body(chat: true, "tell me", new { max_tokens = 100, stream = true, x_fake_tokens = 50, x_fake_hang_after = 0 });
        Assert.Empty(await h.SendAndCancelAsync(chat: true, body, 0));
        Assert.Equal(0, (await h.SettledAsync()).Charged);
        Assert.Equal(6000, h.Available);
    }

    [Theory]
    [InlineData(null, null)]
    [InlineData(false, null)]
    [InlineData(true, null)]
    [InlineData(true, true)]
    public async Task StreamUsage_ReachesTheClientOnlyAsAsked_ChargedTheSameEachWay(bool? includeUsage, bool? continuous)
    {
        await using var h = await AccountingHarness.StartAsync(redis.ConnectionString, 6000);
        object? options = includeUsage is null ? null : new { include_usage = includeUsage, continuous_usage_stats = continuous };
        var body = AccountingHarness.Body(chat: true, "tell me", new { max_tokens = 10, stream = true, stream_options = options, x_fake_tokens = 4, x_fake_prompt_tokens = 5 });
        var (status, text, _) = await h.SendAsync(chat: true, body);
        Assert.Equal(200, status);
        var data = text.Split("\n\n", StringSplitOptions.RemoveEmptyEntries).Select(e => e["data: ".Length..]).ToList();
        Assert.Equal("[DONE]", data[^1]);
        var chunks = data[..^1].Select(d => JsonDocument.Parse(d).RootElement).ToList();
        Assert.Equal(5, chunks.Count(c => c.GetProperty("choices").GetArrayLength() > 0)); // 4 tokens + finish
        if (includeUsage != true)
        {
            Assert.All(chunks, c => Assert.False(c.TryGetProperty("usage", out _)));
            Assert.Equal(5, chunks.Count);
        }
        else
        {
            var last = chunks[^1];
            Assert.Equal(0, last.GetProperty("choices").GetArrayLength());
            Assert.Equal(9, last.GetProperty("usage").GetProperty("total_tokens").GetInt32());
            var tokenChunks = chunks[..4];
            if (continuous == true) Assert.All(tokenChunks, c => Assert.Equal(JsonValueKind.Object, c.GetProperty("usage").ValueKind));
            else Assert.All(tokenChunks, c => Assert.Equal(JsonValueKind.Null, c.GetProperty("usage").ValueKind));
        }
        // What the node was asked for, whatever the client asked.
        var sent = JsonDocument.Parse(h.Node.Received.Single().Body).RootElement.GetProperty("stream_options");
        Assert.True(sent.GetProperty("include_usage").GetBoolean());
        Assert.True(sent.GetProperty("continuous_usage_stats").GetBoolean());
        Assert.Equal(5 + 4, (await h.SettledAsync()).Charged);
    }
}
