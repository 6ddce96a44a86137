using System.Collections.Concurrent;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Serving.AdapterStore.Registry;
using Serving.AdapterStore.Storage;
using Serving.Contracts.Registry;
using StackExchange.Redis;

namespace Serving.Gateway.Tests.Infrastructure;

/// <summary>What a fake node received.</summary>
public sealed record ReceivedRequest(string Path, string Model, string? Tenant, bool HadAuthorization, bool Stream, string? User, byte[] Body,
    string? GatewayKey = null, string[]? ServingHeaders = null);

/// <summary>
/// A stand-in for the inference node until the real one (branch <c>node</c>) lands: a Kestrel app on 127.0.0.1:0 that
/// speaks OpenAI's wire format (JSON completions, SSE chunks ending in <c>data: [DONE]</c>) with controllable delays,
/// failures and mid-stream death, and publishes heartbeats through <see cref="NodeRegistry"/> like the real node will.
/// </summary>
public sealed class FakeNode : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly ConnectionMultiplexer _redis;
    private readonly NodeRegistry _registry;
    private readonly CancellationTokenSource _beating = new();
    private readonly DateTimeOffset _started = DateTimeOffset.UtcNow;
    private Task? _beatLoop;
    private int _active;

    private FakeNode(WebApplication app, ConnectionMultiplexer redis, string prefix, string id, string model)
    {
        _app = app;
        _redis = redis;
        _registry = new NodeRegistry(redis, new RegistryKeys(prefix));
        Id = id;
        Model = model;
    }

    public string Id { get; }
    public string Model { get; }
    public string BaseUrl { get; private set; } = "";
    public ConcurrentQueue<ReceivedRequest> Received { get; } = new();
    /// <summary>Released once per request received (after it is in <see cref="Received"/>).</summary>
    public SemaphoreSlim ReceivedSignal { get; } = new(0);
    public int Cancelled;
    public int Completed;

    /// <summary>Tokens per response.</summary>
    public int Tokens { get; set; } = 4;
    /// <summary>When set, JSON responses report this <c>usage.generated_tokens</c> (an alignment method's candidates).</summary>
    public int? GeneratedTokens { get; set; }
    /// <summary>Delay before each streamed token.</summary>
    public TimeSpan TokenDelay { get; set; } = TimeSpan.Zero;
    /// <summary>Abort the connection after this many chunks (node death mid-stream).</summary>
    public int? DieAfterChunks { get; set; }

    /// <summary>What its readiness probe answers (the gateway's active health checks read it).</summary>
    public bool Ready { get; set; } = true;
    /// <summary>Stop sending (but keep the connection) after this many chunks.</summary>
    public int? HangAfterChunks { get; set; }
    /// <summary>When set, the stream waits for it after the first chunk.</summary>
    public TaskCompletionSource? AfterFirstChunk { get; set; }
    /// <summary>Set when a stream's first chunk was flushed.</summary>
    public TaskCompletionSource FirstChunkSent { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    /// <summary>Set when a request was cancelled by the caller.</summary>
    public TaskCompletionSource CancelSeen { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private readonly SemaphoreSlim _publishing = new(1, 1);

    /// <summary>The context it publishes as <c>max_model_len</c> (0: unknown).</summary>
    public int MaxModelLen { get; set; }

    public AdapterResidency Residency { get; set; } = AdapterResidency.Empty;
    public int QueueDepth { get; set; }
    public double KvUsage { get; set; }
    public int MaxRunning { get; set; } = 32;
    /// <summary>The queue limit it publishes as <c>max_queue</c> (0: unknown, the gateway never sheds for it).</summary>
    public int MaxQueue { get; set; }
    public TimeSpan HeartbeatTtl { get; set; } = TimeSpan.FromSeconds(3);

    public static async Task<FakeNode> StartAsync(string redis, string registryPrefix, string id, string model = "fake", bool heartbeat = true)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        var app = builder.Build();
        var node = new FakeNode(app, await ConnectionMultiplexer.ConnectAsync(redis), registryPrefix, id, model);
        app.MapPost("/v1/chat/completions", node.HandleAsync);
        app.MapPost("/v1/completions", node.HandleAsync);
        app.MapGet("/health/ready", () => node.Ready ? Results.Ok() : Results.StatusCode(503));
        await app.StartAsync();
        node.BaseUrl = app.Services.GetRequiredService<Microsoft.AspNetCore.Hosting.Server.IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First() + "/";
        if (heartbeat) node.StartHeartbeats();
        return node;
    }

    public NodeHeartbeat Heartbeat() => new()
    {
        NodeId = Id, BaseUrl = BaseUrl, Model = Model, Version = "fake-1", StartedAt = _started, Adapters = Residency,
        QueueDepth = QueueDepth, Running = Volatile.Read(ref _active), MaxRunning = MaxRunning, KvUsage = KvUsage, Timestamp = DateTimeOffset.UtcNow,
        MaxModelLen = MaxModelLen, MaxQueue = MaxQueue,
    };

    /// <summary>
    /// Publishes the current state. Snapshot and write happen under one lock, so a beat of the background loop that read
    /// the properties before a test changed them always lands before the test's own publish, never after it (a stale
    /// beat arriving last used to reset, e.g., <see cref="MaxModelLen"/> to 0 in the gateway's view on a loaded machine).
    /// </summary>
    public async Task PublishAsync()
    {
        await _publishing.WaitAsync();
        try
        {
            await _registry.PublishHeartbeatAsync(Heartbeat(), HeartbeatTtl);
        }
        finally
        {
            _publishing.Release();
        }
    }

    public void StartHeartbeats()
    {
        _beatLoop = Task.Run(async () =>
        {
            while (!_beating.IsCancellationRequested)
            {
                try
                {
                    await PublishAsync();
                }
                catch (StoreUnavailableException)
                {
                    // Redis restarting: the real node keeps serving and beats again later.
                }
                try
                {
                    await Task.Delay(100, _beating.Token);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
            }
        });
    }

    /// <summary>Crash: heartbeats stop, the listener closes and open connections are cut.</summary>
    public async Task KillAsync()
    {
        await _beating.CancelAsync();
        if (_beatLoop is not null) await _beatLoop; // a crashed process publishes nothing afterwards (an in-flight beat lands first)
        using var now = new CancellationTokenSource();
        await now.CancelAsync();
        await _app.StopAsync(now.Token);
    }

    private async Task HandleAsync(HttpContext ctx)
    {
        Interlocked.Increment(ref _active);
        try
        {
            using var raw = new MemoryStream();
            await ctx.Request.Body.CopyToAsync(raw);
            var body = JsonNode.Parse(raw.ToArray())!.AsObject();
            bool stream = body["stream"]?.GetValue<bool>() ?? false;
            string model = body["model"]!.GetValue<string>();
            Received.Enqueue(new ReceivedRequest(ctx.Request.Path, model, ctx.Request.Headers["X-Serving-Tenant"].FirstOrDefault(),
                ctx.Request.Headers.Authorization.Count > 0, stream, body["user"]?.GetValue<string>(), raw.ToArray(),
                ctx.Request.Headers["X-Serving-Gateway-Key"].FirstOrDefault(),
                ctx.Request.Headers.Keys.Where(h => h.StartsWith("X-Serving-", StringComparison.OrdinalIgnoreCase)).Order(StringComparer.Ordinal).ToArray()));
            ReceivedSignal.Release();
            ctx.Response.Headers["X-Serving-Node"] = Id; // as a real node does once registered
            ctx.Response.Headers["X-Serving-Adapter"] = model + "@1"; // the caller's own adapter version: never hidden
            bool chat = ctx.Request.Path.StartsWithSegments("/v1/chat");
            // Per-request script (unknown fields reach the node byte for byte): x_fake_status refuses with that status,
            // x_fake_tokens / x_fake_prompt_tokens / x_fake_generated set the answer's size and usage (tokens per choice,
            // n choices), x_fake_hang_after stops a stream after that many token chunks until the caller goes away.
            if (body["x_fake_status"]?.GetValue<int>() is int refuse)
            {
                ctx.Response.StatusCode = refuse;
                await ctx.Response.WriteAsJsonAsync(new { error = new { message = "refused by script", type = "invalid_request_error", param = "x_fake_status", code = (string?)null } });
                return;
            }
            int tokens = body["x_fake_tokens"]?.GetValue<int>() ?? Tokens;
            int choices = body["n"]?.GetValue<int>() ?? 1;
            int promptTokens = body["x_fake_prompt_tokens"]?.GetValue<int>() ?? 3;
            int? generatedOverride = body["x_fake_generated"]?.GetValue<int>() ?? GeneratedTokens;
            int? hangAfter = body["x_fake_hang_after"]?.GetValue<int>();
            object Usage(int completion, int? generated) => generated is { } g
                ? new { prompt_tokens = promptTokens, completion_tokens = completion, total_tokens = promptTokens + completion, generated_tokens = g }
                : new { prompt_tokens = promptTokens, completion_tokens = completion, total_tokens = promptTokens + completion };
            if (!stream)
            {
                if (TokenDelay > TimeSpan.Zero) await Task.Delay(TokenDelay * tokens, ctx.RequestAborted);
                string text = string.Concat(Enumerable.Range(0, tokens).Select(i => $"t{i} "));
                var choiceList = Enumerable.Range(0, choices).Select(c => chat
                    ? (object)new { index = c, message = new { role = "assistant", content = text }, finish_reason = "stop" }
                    : new { index = c, text, finish_reason = "stop" }).ToArray();
                await ctx.Response.WriteAsJsonAsync(new
                {
                    id = "cmpl-1", @object = chat ? "chat.completion" : "text_completion", created = 1, model,
                    choices = choiceList,
                    usage = Usage(tokens * choices, generatedOverride),
                });
                Interlocked.Increment(ref Completed);
                return;
            }
            bool includeUsage = body["stream_options"]?["include_usage"]?.GetValue<bool>() == true;
            bool continuous = includeUsage && body["stream_options"]?["continuous_usage_stats"]?.GetValue<bool>() == true;
            ctx.Response.ContentType = "text/event-stream";
            ctx.Response.Headers.CacheControl = "no-cache";
            if (hangAfter == 0)
            {
                await ctx.Response.StartAsync(ctx.RequestAborted);
                await ctx.Response.Body.FlushAsync(ctx.RequestAborted);
                await Task.Delay(Timeout.Infinite, ctx.RequestAborted);
            }
            Dictionary<string, object?> Chunk(object[] choiceList, object? usage)
            {
                var c = new Dictionary<string, object?> { ["id"] = "c1", ["object"] = chat ? "chat.completion.chunk" : "text_completion", ["created"] = 1, ["model"] = model, ["choices"] = choiceList };
                if (includeUsage) c["usage"] = usage;
                return c;
            }
            int generatedSoFar = 0;
            for (int i = 0; i < tokens; i++)
            {
                if (DieAfterChunks == i)
                {
                    // Let the gateway read what was sent, then cut the connection as a crashed process would.
                    if (i > 0) await Task.Delay(200);
                    ctx.Abort();
                    return;
                }
                if (HangAfterChunks == i || hangAfter == i)
                {
                    await Task.Delay(Timeout.Infinite, ctx.RequestAborted);
                }
                if (TokenDelay > TimeSpan.Zero) await Task.Delay(TokenDelay, ctx.RequestAborted);
                generatedSoFar += choices;
                var choiceList = Enumerable.Range(0, choices).Select(c => chat
                    ? (object)new { index = c, delta = new { content = $"t{i} " }, finish_reason = (string?)null }
                    : new { index = c, text = $"t{i} ", finish_reason = (string?)null }).ToArray();
                var chunk = Chunk(choiceList, continuous ? Usage(generatedSoFar, generatedSoFar) : null);
                await ctx.Response.WriteAsync("data: " + JsonSerializer.Serialize(chunk) + "\n\n", ctx.RequestAborted);
                await ctx.Response.Body.FlushAsync(ctx.RequestAborted);
                if (i == 0)
                {
                    FirstChunkSent.TrySetResult();
                    if (AfterFirstChunk is { } gate) await gate.Task.WaitAsync(ctx.RequestAborted);
                }
            }
            object last = new { id = "c1", @object = "chat.completion.chunk", created = 1, model, choices = new[] { new { index = 0, delta = new { content = "" }, finish_reason = "stop" } } };
            var tail = "data: " + JsonSerializer.Serialize(last) + "\n\n";
            if (includeUsage) tail += "data: " + JsonSerializer.Serialize(Chunk([], Usage(tokens * choices, generatedOverride ?? tokens * choices))) + "\n\n";
            await ctx.Response.WriteAsync(tail + "data: [DONE]\n\n", ctx.RequestAborted);
            Interlocked.Increment(ref Completed);
        }
        catch (OperationCanceledException) when (ctx.RequestAborted.IsCancellationRequested)
        {
            Interlocked.Increment(ref Cancelled);
            CancelSeen.TrySetResult();
        }
        finally
        {
            Interlocked.Decrement(ref _active);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _beating.CancelAsync();
        if (_beatLoop is not null) await _beatLoop;
        try
        {
            await _registry.RemoveAsync(Id);
        }
        catch (StoreUnavailableException)
        {
        }
        await _app.DisposeAsync();
        await _redis.DisposeAsync();
    }
}
