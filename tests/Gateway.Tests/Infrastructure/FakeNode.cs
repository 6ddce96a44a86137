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

    public AdapterResidency Residency { get; set; } = AdapterResidency.Empty;
    public int QueueDepth { get; set; }
    public double KvUsage { get; set; }
    public int MaxRunning { get; set; } = 32;
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
    };

    public Task PublishAsync() => _registry.PublishHeartbeatAsync(Heartbeat(), HeartbeatTtl);

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
            bool chat = ctx.Request.Path.StartsWithSegments("/v1/chat");
            if (!stream)
            {
                if (TokenDelay > TimeSpan.Zero) await Task.Delay(TokenDelay * Tokens, ctx.RequestAborted);
                string text = string.Concat(Enumerable.Range(0, Tokens).Select(i => $"t{i} "));
                object choice = chat
                    ? new { index = 0, message = new { role = "assistant", content = text }, finish_reason = "stop" }
                    : new { index = 0, text, finish_reason = "stop" };
                await ctx.Response.WriteAsJsonAsync(new
                {
                    id = "cmpl-1", @object = chat ? "chat.completion" : "text_completion", created = 1, model,
                    choices = new[] { choice },
                    usage = GeneratedTokens is { } generated
                        ? (object)new { prompt_tokens = 3, completion_tokens = Tokens, total_tokens = 3 + Tokens, generated_tokens = generated }
                        : new { prompt_tokens = 3, completion_tokens = Tokens, total_tokens = 3 + Tokens },
                });
                Interlocked.Increment(ref Completed);
                return;
            }
            ctx.Response.ContentType = "text/event-stream";
            ctx.Response.Headers.CacheControl = "no-cache";
            for (int i = 0; i < Tokens; i++)
            {
                if (DieAfterChunks == i)
                {
                    // Let the gateway read what was sent, then cut the connection as a crashed process would.
                    if (i > 0) await Task.Delay(200);
                    ctx.Abort();
                    return;
                }
                if (HangAfterChunks == i)
                {
                    await Task.Delay(Timeout.Infinite, ctx.RequestAborted);
                }
                if (TokenDelay > TimeSpan.Zero) await Task.Delay(TokenDelay, ctx.RequestAborted);
                object chunk = chat
                    ? new { id = "c1", @object = "chat.completion.chunk", created = 1, model, choices = new[] { new { index = 0, delta = new { content = $"t{i} " }, finish_reason = (string?)null } } }
                    : new { id = "c1", @object = "text_completion", created = 1, model, choices = new[] { new { index = 0, text = $"t{i} ", finish_reason = (string?)null } } };
                await ctx.Response.WriteAsync("data: " + JsonSerializer.Serialize(chunk) + "\n\n", ctx.RequestAborted);
                await ctx.Response.Body.FlushAsync(ctx.RequestAborted);
                if (i == 0)
                {
                    FirstChunkSent.TrySetResult();
                    if (AfterFirstChunk is { } gate) await gate.Task.WaitAsync(ctx.RequestAborted);
                }
            }
            object last = new { id = "c1", @object = "chat.completion.chunk", created = 1, model, choices = new[] { new { index = 0, delta = new { content = "" }, finish_reason = "stop" } } };
            await ctx.Response.WriteAsync("data: " + JsonSerializer.Serialize(last) + "\n\ndata: [DONE]\n\n", ctx.RequestAborted);
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
