using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Serving.LoadGen.Tests.Support;

/// <summary>What the scripted server does for one request.</summary>
public sealed record Script
{
    public int Status { get; init; } = 200;
    public int TtftMs { get; init; } = 200;
    public int ItlMs { get; init; } = 50;
    /// <summary>Tokens (one per chunk); null means the request's max_tokens.</summary>
    public int? Tokens { get; init; } = 10;
    public bool SendUsage { get; init; } = true;
    public bool Malformed { get; init; }
    public bool OmitDone { get; init; }
    /// <summary>Sent as the <c>Retry-After</c> header of an error status; null sends none.</summary>
    public string? RetryAfter { get; init; }
}

/// <summary>What the server saw and when (Stopwatch timestamps), for comparing with the client's measurements.</summary>
public sealed record Observation(string RequestId, string Path, string Protocol, string? Authorization, JsonElement Body, long ReceivedTs, IReadOnlyList<long> ChunkTs, long DoneTs)
{
    public static double Ms(long from, long to) => (to - from) * 1000.0 / Stopwatch.Frequency;
}

/// <summary>
/// A real Kestrel server on 127.0.0.1 (port 0) that answers OpenAI chat/completions routes following a
/// script: SSE chunks with known delays, usage, errors, malformed streams or hangs.
/// </summary>
public sealed class ScriptedOpenAiServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly Func<JsonElement, Script> _script;

    private ScriptedOpenAiServer(WebApplication app, Func<JsonElement, Script> script)
    {
        _app = app;
        _script = script;
    }

    public Uri BaseUrl { get; private set; } = null!;

    public ConcurrentQueue<Observation> Observations { get; } = new();

    public static async Task<ScriptedOpenAiServer> StartAsync(Func<JsonElement, Script> script, HttpProtocols protocols = HttpProtocols.Http1)
    {
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(k => k.Listen(IPAddress.Loopback, 0, listen => listen.Protocols = protocols));
        WebApplication app = builder.Build();
        var server = new ScriptedOpenAiServer(app, script);
        app.MapPost("/v1/chat/completions", ctx => server.HandleAsync(ctx, chat: true));
        app.MapPost("/v1/completions", ctx => server.HandleAsync(ctx, chat: false));
        await app.StartAsync();
        string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        server.BaseUrl = new Uri(address);
        return server;
    }

    public static Task<ScriptedOpenAiServer> StartAsync(Script script, HttpProtocols protocols = HttpProtocols.Http1) =>
        StartAsync(_ => script, protocols);

    private async Task HandleAsync(HttpContext ctx, bool chat)
    {
        long received = Stopwatch.GetTimestamp();
        CancellationToken ct = ctx.RequestAborted;
        using JsonDocument doc = await JsonDocument.ParseAsync(ctx.Request.Body, cancellationToken: ct);
        JsonElement body = doc.RootElement.Clone();
        Script script = _script(body);
        var chunkTs = new List<long>();
        void Observe() => Observations.Enqueue(new Observation(
            ctx.Request.Headers["X-Request-Id"].ToString(), ctx.Request.Path, ctx.Request.Protocol, ctx.Request.Headers.Authorization.FirstOrDefault(),
            body, received, chunkTs.ToArray(), Stopwatch.GetTimestamp()));

        if (script.Status != 200)
        {
            ctx.Response.StatusCode = script.Status;
            if (script.RetryAfter is not null) ctx.Response.Headers.RetryAfter = script.RetryAfter;
            await ctx.Response.WriteAsJsonAsync(new { error = new { message = "scripted failure", type = "scripted", param = (string?)null, code = script.Status } }, ct);
            Observe();
            return;
        }

        int tokens = script.Tokens ?? body.GetProperty("max_tokens").GetInt32();
        bool stream = body.TryGetProperty("stream", out JsonElement s) && s.GetBoolean();
        bool includeUsage = body.TryGetProperty("stream_options", out JsonElement so) && so.GetProperty("include_usage").GetBoolean();
        int promptTokens = chat
            ? body.GetProperty("messages")[0].GetProperty("content").GetString()!.Split(' ').Length
            : body.GetProperty("prompt").GetString()!.Split(' ').Length;
        var usage = new { prompt_tokens = promptTokens, completion_tokens = tokens, total_tokens = promptTokens + tokens };

        if (!stream)
        {
            await Task.Delay(script.TtftMs + (tokens - 1) * script.ItlMs, ct);
            string text = string.Join(' ', Enumerable.Repeat("tok", tokens));
            object choice = chat
                ? new { index = 0, message = new { role = "assistant", content = text }, finish_reason = "length" }
                : new { index = 0, text, finish_reason = "length" };
            await ctx.Response.WriteAsJsonAsync(new { id = "x", @object = "chat.completion", choices = new[] { choice }, usage = script.SendUsage ? usage : null }, ct);
            Observe();
            return;
        }

        ctx.Response.ContentType = "text/event-stream";
        await ctx.Response.StartAsync(ct);
        try
        {
            for (int i = 0; i < tokens; i++)
            {
                await Task.Delay(i == 0 ? script.TtftMs : script.ItlMs, ct);
                string data = script.Malformed && i == 1
                    ? "{\"choices\": [ {oops"
                    : JsonSerializer.Serialize(chat
                        ? new { id = "x", @object = "chat.completion.chunk", choices = new object[] { new { index = 0, delta = new { content = $" t{i}" } } } }
                        : (object)new { id = "x", @object = "text_completion", choices = new object[] { new { index = 0, text = $" t{i}" } } });
                chunkTs.Add(Stopwatch.GetTimestamp());
                await ctx.Response.WriteAsync($"data: {data}\n\n", ct);
                await ctx.Response.Body.FlushAsync(ct);
            }

            if (includeUsage && script.SendUsage)
            {
                await ctx.Response.WriteAsync($"data: {JsonSerializer.Serialize(new { id = "x", choices = Array.Empty<object>(), usage })}\n\n", ct);
            }

            if (!script.OmitDone)
            {
                await ctx.Response.WriteAsync("data: [DONE]\n\n", ct);
            }
        }
        finally
        {
            Observe();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
