using System.Collections.Concurrent;
using System.Net.Http.Headers;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Serilog.Core;
using Serilog.Events;
using Serving.AdapterStore.Storage;
using Serving.Gateway.Routing;

namespace Serving.Gateway.Tests.Infrastructure;

/// <summary>The real gateway (same composition as Program.cs) on 127.0.0.1:0, with its own key prefixes in a shared Redis.</summary>
public sealed class GatewayHost : IAsyncDisposable
{
    public const string AdminKey = "sk-test-admin";
    public const string KeyA = "sk-test-tenant-a";
    public const string KeyB = "sk-test-tenant-b";

    private readonly WebApplication _app;

    private GatewayHost(WebApplication app, string prefix, string baseUrl, ConcurrentQueue<string> logs)
    {
        _app = app;
        Logs = logs;
        Prefix = prefix;
        BaseUrl = baseUrl;
    }

    public string Prefix { get; }
    public string BaseUrl { get; }
    public IServiceProvider Services => _app.Services;
    public ConcurrentQueue<string> Logs { get; }

    /// <summary>Registry prefix nodes of this gateway publish under.</summary>
    public string RegistryPrefix => Prefix + "-reg";

    /// <param name="redis">redis-server to use.</param>
    /// <param name="extra">Configuration over the defaults.</param>
    /// <param name="services">Registrations made before the gateway's own (its <c>TryAdd</c>s then keep them), e.g. the token budget's clock.</param>
    public static async Task<GatewayHost> StartAsync(string redis, Dictionary<string, string?>? extra = null, Action<IServiceCollection>? services = null)
    {
        string prefix = "t" + Guid.NewGuid().ToString("N")[..10];
        var config = new Dictionary<string, string?>
        {
            ["AdapterStore:RedisConnectionString"] = redis,
            ["AdapterStore:KeyPrefix"] = prefix + "-adp",
            ["Gateway:Routing:RegistryPrefix"] = prefix + "-reg",
            ["Gateway:Routing:RefreshInterval"] = "00:00:00.100",
            ["Gateway:Routing:HealthInterval"] = "00:00:00",
            ["Gateway:Routing:AdapterCacheTtl"] = "00:00:00.200",
            ["Gateway:Tenancy:KeyPrefix"] = prefix + "-gw",
            ["Gateway:Tenancy:StaticKeys:0:Key"] = AdminKey,
            ["Gateway:Tenancy:StaticKeys:0:Role"] = "admin",
            ["Gateway:Tenancy:StaticKeys:1:Key"] = KeyA,
            ["Gateway:Tenancy:StaticKeys:1:Tenant"] = "tenant-a",
            ["Gateway:Tenancy:StaticKeys:2:Key"] = KeyB,
            ["Gateway:Tenancy:StaticKeys:2:Tenant"] = "tenant-b",
            ["Gateway:Resilience:StreamIdleTimeout"] = "00:00:05",
            ["Logging:LogLevel:Default"] = "Debug",
        };
        foreach (var (k, v) in extra ?? []) config[k] = v;
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory, EnvironmentName = "Testing" });
        builder.Configuration.AddInMemoryCollection(config);
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        var logs = new ConcurrentQueue<string>();
        // Serilog is the gateway's logger (ServiceDefaults): a sink in its container sees every record from Debug up.
        builder.Services.AddSingleton<ILogEventSink>(new CapturingSink(logs));
        services?.Invoke(builder.Services);
        builder.AddGateway();
        var app = builder.Build();
        app.MapGateway();
        await app.StartAsync();
        string url = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return new GatewayHost(app, prefix, url, logs);
    }

    public HttpClient Client(string? key)
    {
        var c = new HttpClient { BaseAddress = new Uri(BaseUrl), Timeout = TimeSpan.FromSeconds(30) };
        if (key is not null) c.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        return c;
    }

    /// <summary>Waits until the gateway's view holds exactly these node ids (bounded).</summary>
    /// <remarks>
    /// Also waits until the proxy has applied that set (YARP reloads its configuration after the view signals a change,
    /// so for a moment the view may hold a node the proxy cannot route to yet: a request then would get 503).
    /// </remarks>
    public async Task WaitForNodesAsync(params string[] ids)
    {
        var view = Services.GetRequiredService<INodeView>();
        var proxy = Services.GetRequiredService<Yarp.ReverseProxy.IProxyStateLookup>();
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (!(view.Current.Nodes.Count == ids.Length && ids.All(view.Current.Nodes.ContainsKey) && Routable(proxy, ids)))
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"Gateway view has [{string.Join(",", view.Current.Nodes.Keys)}], expected [{string.Join(",", ids)}] (routable: {Routable(proxy, ids)})");
            await Task.Delay(20);
        }
    }

    private static bool Routable(Yarp.ReverseProxy.IProxyStateLookup proxy, string[] ids) =>
        proxy.TryGetCluster(Serving.Gateway.Routing.RoutingPolicies.NodesCluster, out var cluster)
        && cluster.Destinations.Count == ids.Length && ids.All(cluster.Destinations.ContainsKey);

    /// <summary>Waits until the gateway's view satisfies <paramref name="condition"/> (bounded).</summary>
    public async Task WaitForAsync(Func<INodeView, bool> condition)
    {
        var view = Services.GetRequiredService<INodeView>();
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (!condition(view))
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException("the gateway's view never reached the expected state");
            await Task.Delay(20);
        }
    }

    /// <summary>Stores an adapter record directly (the payload is opaque to the gateway).</summary>
    public Task<AdapterMetadata> PublishAdapterAsync(string tenant, string name, string baseModel = "fake", byte[]? original = null) =>
        Services.GetRequiredService<IAdapterStore>().PublishAsync(
            new AdapterMetadata { Tenant = tenant, Name = name, BaseModel = baseModel, Checksum = "" }, new byte[64], original, CancellationToken.None);

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}

/// <summary>Keeps every formatted log line (to prove that no key or prompt is logged).</summary>
/// <summary>Every record the gateway logs, rendered as "level category: message exception".</summary>
public sealed class CapturingSink(ConcurrentQueue<string> sink) : ILogEventSink
{
    public void Emit(LogEvent logEvent)
    {
        string category = logEvent.Properties.TryGetValue("SourceContext", out var c) && c is ScalarValue { Value: string s } ? s : "";
        // Every property too (scopes, fields the template does not name): what a JSON log line would carry.
        string properties = string.Join(" ", logEvent.Properties.Select(p => $"{p.Key}={p.Value}"));
        sink.Enqueue($"{logEvent.Level} {category}: {logEvent.RenderMessage(System.Globalization.CultureInfo.InvariantCulture)} {logEvent.Exception} {properties}");
    }
}
