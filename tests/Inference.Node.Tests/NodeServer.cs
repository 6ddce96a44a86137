using Xunit;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Serving.Fixtures;
using Serving.Inference.Node.Adapters;
using Serving.Inference.Node.Hosting;
using Serving.Inference.Node.OpenAI;
using Serving.Inference.Node.Status;

namespace Serving.Inference.Node.Tests;

/// <summary>Random-weight checkpoints written once per test run.</summary>
internal static class Models
{
    private static readonly Lock Gate = new();
    private static string? _tinyGpt2;
    private static string? _slowGpt2;
    private static string? _tinyLlama;

    /// <summary>Tiny Llama-family model (rotary, grouped-query attention, untied head).</summary>
    public static string TinyLlama
    {
        get
        {
            lock (Gate)
            {
                if (_tinyLlama is not null) return _tinyLlama;
                var dir = Path.Combine(Path.GetTempPath(), "serving-node-tests-" + Environment.ProcessId, "llama");
                FixtureCheckpoint.Write(dir, FixtureShape.TinyLlama);
                return _tinyLlama = dir;
            }
        }
    }

    /// <summary>Tiny GPT-2 (byte tokenizer) with 2048 positions, so streams can run long enough to cancel them.</summary>
    public static string TinyGpt2
    {
        get
        {
            lock (Gate)
            {
                if (_tinyGpt2 is not null) return _tinyGpt2;
                var dir = Path.Combine(Path.GetTempPath(), "serving-node-tests-" + Environment.ProcessId, "tiny");
                FixtureCheckpoint.Write(dir, FixtureShape.TinyGpt2 with { MaxPositions = 2048 });
                return _tinyGpt2 = dir;
            }
        }
    }

    /// <summary>
    /// A wider, deeper GPT-2 (still random, byte tokenizer) whose decode steps take long enough that a stream of a few
    /// hundred tokens outlasts the spread of HTTP arrivals and a client's cancel.
    /// </summary>
    public static string SlowGpt2
    {
        get
        {
            lock (Gate)
            {
                if (_slowGpt2 is not null) return _slowGpt2;
                var dir = Path.Combine(Path.GetTempPath(), "serving-node-tests-" + Environment.ProcessId, "slow");
                FixtureCheckpoint.Write(dir, FixtureShape.TinyGpt2 with { Hidden = 192, Layers = 4, Heads = 4, Intermediate = 768, MaxPositions = 2048 });
                return _slowGpt2 = dir;
            }
        }
    }
}

/// <summary>A node started in-process with real Kestrel on 127.0.0.1 and a free port, exactly as Program.cs wires it.</summary>
public sealed class NodeServer : IAsyncDisposable
{
    private readonly WebApplication _app;

    private NodeServer(WebApplication app, Uri address)
    {
        _app = app;
        Address = address;
        // No draining of unread responses: disposing a stream closes the connection, as a disconnecting client does.
        Http = new HttpClient(new SocketsHttpHandler { MaxResponseDrainSize = 0, ResponseDrainTimeout = TimeSpan.Zero })
        {
            BaseAddress = address,
            Timeout = TimeSpan.FromSeconds(60),
        };
    }

    /// <summary>Base address, e.g. http://127.0.0.1:41234/.</summary>
    public Uri Address { get; }

    /// <summary>A client for the node.</summary>
    public HttpClient Http { get; }

    /// <summary>The model id the node serves.</summary>
    public const string ModelId = "tiny";

    public IServiceProvider Services => _app.Services;

    public static async Task<NodeServer> StartAsync(IDictionary<string, string?>? settings = null, Action<IServiceCollection>? services = null)
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { EnvironmentName = "Testing", ContentRootPath = AppContext.BaseDirectory });
        var config = new Dictionary<string, string?>
        {
            ["Node:ModelPath"] = Models.TinyGpt2,
            ["Node:ModelId"] = ModelId,
            ["Node:Host"] = "127.0.0.1",
            ["Node:Port"] = "0",
            ["Node:MaxBatch"] = "16",
            ["Node:MaxContext"] = "2048",
            ["Node:Threads"] = "1",
            ["Node:ShutdownDrain"] = "00:00:02",
            ["Logging:LogLevel:Default"] = "Warning",
        };
        foreach (var (k, v) in settings ?? new Dictionary<string, string?>()) config[k] = v;
        builder.Configuration.AddInMemoryCollection(config);
        builder.AddNodeDefaults();
        services?.Invoke(builder.Services);
        builder.Services.AddInferenceNode();
        var app = builder.Build();
        app.MapNode();
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return new NodeServer(app, new Uri(address.Replace("[::]", "127.0.0.1") + "/"));
    }

    /// <summary>Stops the host as a SIGTERM would (drain, then end streams).</summary>
    public Task StopAsync() => _app.StopAsync();

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}

/// <summary>One node shared by the tests of a class.</summary>
public sealed class SharedNode : IAsyncLifetime
{
    public NodeServer Server { get; private set; } = null!;

    public async Task InitializeAsync() => Server = await NodeServer.StartAsync();

    public async Task DisposeAsync() => await Server.DisposeAsync();
}
