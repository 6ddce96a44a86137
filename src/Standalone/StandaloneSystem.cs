using System.Globalization;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.Logging;
using OpenTelemetry.Metrics;
using OpenTelemetry.Trace;
using Serving.AdapterStore.Api;
using Serving.AdapterStore.Compression;
using Serving.AdapterStore.Ingest;
using Serving.AdapterStore.Peft;
using Serving.AdapterStore.RewardHeads;
using Serving.AdapterStore.Storage;
using Serving.Checkpoints;
using Serving.Gateway;
using Serving.Gateway.Tenancy;
using Serving.Inference.Node;
using Serving.Inference.Node.Hosting;
using Serving.Inference.Node.Telemetry;

namespace Serving.Standalone;

/// <summary>
/// The whole system in one process: the store (embedded Garnet unless <see cref="StandaloneOptions.Redis"/> is set),
/// one inference node on an internal loopback port publishing heartbeats, and the gateway on the public port, all
/// wired to the same Redis, with a development tenant and key. Stops in reverse order: gateway, node (drain), store.
/// </summary>
public sealed partial class StandaloneSystem : IAsyncDisposable
{
    /// <summary>The tenant whose adapters every tenant may use.</summary>
    public const string PublicTenant = Serving.Contracts.Models.ModelId.PublicTenant;

    private readonly EmbeddedGarnet? _garnet;
    private readonly WebApplication _node;
    private readonly WebApplication _gateway;
    private int _stopped;

    /// <summary>The head the demo folder is seeded as.</summary>
    public const string DemoRewardHead = "positive";

    /// <summary>The Otter form of the demo head, when <c>models/demo/otter</c> exists.</summary>
    public const string DemoOtterHead = "positive-otter";

    private StandaloneSystem(EmbeddedGarnet? garnet, WebApplication node, WebApplication gateway, string gatewayUrl, string nodeUrl,
        string redis, string modelId, string modelPath, string devTenant, string devKey, IReadOnlyList<string> publicAdapters,
        IReadOnlyList<string> publicRewardHeads, string? defaultRewardHead)
    {
        PublicAdapters = publicAdapters;
        PublicRewardHeads = publicRewardHeads;
        DefaultRewardHead = defaultRewardHead;
        _garnet = garnet;
        _node = node;
        _gateway = gateway;
        GatewayUrl = gatewayUrl;
        NodeUrl = nodeUrl;
        Redis = redis;
        ModelId = modelId;
        ModelPath = modelPath;
        DevTenant = devTenant;
        DevKey = devKey;
    }

    /// <summary>Public address of the gateway (a wildcard host shown as 127.0.0.1), no trailing slash.</summary>
    public string GatewayUrl { get; }

    /// <summary>Internal address of the node.</summary>
    public string NodeUrl { get; }

    /// <summary>The node's services (tests read its model host and reward head sources).</summary>
    internal IServiceProvider NodeServices => _node.Services;

    /// <summary>Redis connection string in use.</summary>
    public string Redis { get; }

    /// <summary>True when the store is the embedded Garnet.</summary>
    public bool EmbeddedStore => _garnet is not null;

    /// <summary>Base model id.</summary>
    public string ModelId { get; }

    /// <summary>Checkpoint folder.</summary>
    public string ModelPath { get; }

    /// <summary>Development tenant.</summary>
    public string DevTenant { get; }

    /// <summary>Development tenant's API key.</summary>
    public string DevKey { get; }

    /// <summary>Names of the adapters tenant <c>public</c> has for this base model (seeded or already stored), sorted.</summary>
    public IReadOnlyList<string> PublicAdapters { get; }

    /// <summary>Names of the reward heads tenant <c>public</c> has for this base model (seeded or already stored), sorted.</summary>
    public IReadOnlyList<string> PublicRewardHeads { get; }

    /// <summary>The node's default reward head (<c>Node:DefaultRewardHead</c>), null when it has none.</summary>
    public string? DefaultRewardHead { get; }

    /// <summary>
    /// Starts every part. <paramref name="configuration"/> is the process configuration (command line, environment,
    /// <c>standalone.json</c>); keys of the <c>Node</c> and <c>Gateway</c> sections reach the node and the gateway as they
    /// are, and the <c>Standalone</c> section is checked by <see cref="StandaloneOptionsValidator"/>
    /// (<see cref="Microsoft.Extensions.Options.OptionsValidationException"/> when it fails).
    /// </summary>
    public static Task<StandaloneSystem> StartAsync(IConfiguration configuration, CancellationToken cancellationToken = default) =>
        StartAsync(configuration, nodeServices: null, gatewayServices: null, cancellationToken);

    /// <summary>As <see cref="StartAsync(IConfiguration, CancellationToken)"/>, with services added to the node's and the gateway's containers (tests add log sinks).</summary>
    internal static async Task<StandaloneSystem> StartAsync(IConfiguration configuration, Action<IServiceCollection>? nodeServices,
        Action<IServiceCollection>? gatewayServices, CancellationToken cancellationToken = default)
    {
        var options = StandaloneOptionsValidator.Check(configuration.GetSection(StandaloneOptions.Section).Get<StandaloneOptions>() ?? new StandaloneOptions());
        // A folder, or a Hugging Face id resolved in the local hub cache (HubModelNotFoundException says where it looked).
        var model = new NodeOptions
        {
            ModelPath = options.ModelPath ?? configuration["Node:ModelPath"] ?? FindDemoModel(),
            ModelId = configuration["Node:ModelId"],
            HubCache = configuration["Node:HubCache"],
        };
        string modelPath = Path.GetFullPath(model.LocateCheckpoint().Directory);
        if (!LinkedFiles.Exists(Path.Combine(modelPath, "config.json"))) throw new ArgumentException($"No checkpoint (config.json) at '{modelPath}'.");
        string modelId = model.ResolvedModelId;
        string devKey = string.IsNullOrWhiteSpace(options.DevKey) ? ApiKeyStore.NewSecret() : options.DevKey;

        EmbeddedGarnet? garnet = null;
        WebApplication? node = null, gateway = null;
        try
        {
            string redis;
            if (string.IsNullOrWhiteSpace(options.Redis))
            {
                // The AdapterStore section's Embedded* keys size it (memory, data folder, compaction), validated like the store's.
                var storeOptions = AdapterStoreOptionsValidator.Check(
                    configuration.GetSection(AdapterStoreOptions.SectionName).Get<AdapterStoreOptions>() ?? new AdapterStoreOptions());
                garnet = EmbeddedGarnet.Start(storeOptions);
                redis = garnet.ConnectionString;
            }
            else
            {
                redis = options.Redis;
            }

            // The demo head becomes the node's default (resolved from the store on use, so seeding it after the node starts is fine).
            string? defaultHead = configuration["Node:DefaultRewardHead"];
            if (defaultHead is null && options.SeedRewardHeads && File.Exists(Path.Combine(modelPath, "reward-head", "config.json")))
                defaultHead = $"{PublicTenant}/{DemoRewardHead}";
            node = BuildNode(configuration, new Dictionary<string, string?>
            {
                ["urls"] = "http://127.0.0.1:0",
                ["Node:ModelPath"] = modelPath,
                ["Node:ModelId"] = modelId,
                ["Node:Redis"] = redis,
                ["Node:Id"] = configuration["Node:Id"] ?? "standalone-node",
                ["Node:DefaultRewardHead"] = defaultHead,
                // One process, one trace exporter: the gateway's (below) exports the node's spans too.
                ["Telemetry:OtlpEndpoint"] = "",
            }, nodeServices);
            await node.StartAsync(cancellationToken);
            string nodeUrl = Address(node);

            var gatewaySettings = new Dictionary<string, string?>
            {
                ["urls"] = string.Create(CultureInfo.InvariantCulture, $"http://{options.Host}:{options.Port}"),
                ["AdapterStore:RedisConnectionString"] = redis,
                [$"Gateway:BaseModels:{modelId}"] = Path.Combine(modelPath, "config.json"),
                ["Gateway:Tenancy:StaticKeys:0:Key"] = devKey,
                ["Gateway:Tenancy:StaticKeys:0:Tenant"] = options.DevTenant,
                ["Gateway:Tenancy:StaticKeys:0:Role"] = ApiKeyRoles.Tenant,
                ["Telemetry:ServiceName"] = configuration["Telemetry:ServiceName"] ?? "serving-standalone",
            };
            if (!string.IsNullOrWhiteSpace(options.AdminKey))
            {
                gatewaySettings["Gateway:Tenancy:StaticKeys:1:Key"] = options.AdminKey;
                gatewaySettings["Gateway:Tenancy:StaticKeys:1:Role"] = ApiKeyRoles.Admin;
            }
            gateway = BuildGateway(configuration, gatewaySettings, gatewayServices);
            await gateway.StartAsync(cancellationToken);
            await gateway.Services.GetRequiredService<ApiKeyStore>().CreateTenantAsync(options.DevTenant, "Development tenant", cancellationToken);
            if (options.SeedPublicAdapters) await SeedPublicAdaptersAsync(gateway.Services, modelId, Path.Combine(modelPath, "adapters"), cancellationToken);
            if (options.SeedRewardHeads)
            {
                await SeedPublicRewardHeadsAsync(gateway.Services, modelId,
                    [(DemoRewardHead, Path.Combine(modelPath, "reward-head")), (DemoOtterHead, Path.Combine(modelPath, "otter"))], cancellationToken);
            }
            var publicAdapters = (await gateway.Services.GetRequiredService<IAdapterStore>().ListAsync(PublicTenant, cancellationToken))
                .Where(a => a.BaseModel == modelId).Select(a => a.Name).Order(StringComparer.Ordinal).ToList();
            var publicHeads = (await gateway.Services.GetRequiredService<IRewardHeadStore>().ListAsync(PublicTenant, cancellationToken))
                .Where(h => h.BaseModel == modelId).Select(h => h.Name).Order(StringComparer.Ordinal).ToList();
            string gatewayUrl = Address(gateway);
            await WaitReadyAsync(gatewayUrl, cancellationToken);
            return new StandaloneSystem(garnet, node, gateway, gatewayUrl, nodeUrl, redis, modelId, modelPath, options.DevTenant, devKey, publicAdapters,
                publicHeads, defaultHead);
        }
        catch
        {
            await StopAsync(gateway, node, garnet);
            throw;
        }
    }

    /// <summary>
    /// Uploads every PEFT folder under <paramref name="folder"/> (<c>adapter_config.json</c> + <c>adapter_model.safetensors</c>)
    /// as tenant <c>public</c> through the store's ingest pipeline (validation against the base, compression, publish),
    /// unless the store already has an adapter of that name there; a folder that fails validation is logged and skipped.
    /// Stored losslessly: the demo adapters are small (4.4 MB in all), and ComPEFT at its default density 0.1 leaves a mean
    /// relative ΔW error of ~0.96 on them (measured on <c>german</c>), which erases what they teach the demo model.
    /// </summary>
    internal static async Task SeedPublicAdaptersAsync(IServiceProvider services, string modelId, string folder, CancellationToken cancellationToken)
    {
        if (!Directory.Exists(folder)) return;
        var store = services.GetRequiredService<IAdapterStore>();
        var ingestor = services.GetRequiredService<AdapterIngestor>();
        var api = services.GetRequiredService<Microsoft.Extensions.Options.IOptions<AdapterApiOptions>>().Value;
        var logger = services.GetRequiredService<ILoggerFactory>().CreateLogger("Serving.Standalone");
        var keys = services.GetRequiredService<ApiKeyStore>();
        if (await keys.GetTenantAsync(PublicTenant, cancellationToken) is null)
            await keys.CreateTenantAsync(PublicTenant, "Public adapters (every tenant may use them)", cancellationToken);
        var seeded = new List<string>();
        foreach (var dir in Directory.GetDirectories(folder).Order(StringComparer.Ordinal))
        {
            string name = Path.GetFileName(dir);
            string config = Path.Combine(dir, PeftFiles.ConfigName), weights = Path.Combine(dir, PeftFiles.WeightsName);
            if (!File.Exists(config) || !File.Exists(weights) || !AdapterKeys.IsValidName(name)) continue;
            if (await store.GetMetadataAsync(PublicTenant, name, null, cancellationToken) is not null) continue;
            try
            {
                var files = PeftFiles.From(await LinkedFiles.ReadAllBytesAsync(config, cancellationToken), await LinkedFiles.ReadAllBytesAsync(weights, cancellationToken), sawPickle: false);
                await ingestor.IngestAsync(new UploadRequest(PublicTenant, name, modelId, files, new CodecOptions { Codec = AdapterCodec.Lossless },
                    api.KeepOriginalByDefault), cancellationToken);
                seeded.Add(name);
            }
            catch (Exception e) when (e is AdapterValidationException or DanglingLinkException)
            {
                LogNotSeeded(logger, dir, e.Message);
            }
        }
        if (seeded.Count > 0) LogSeeded(logger, seeded.Count, string.Join(", ", seeded), folder);
    }

    /// <summary>
    /// Uploads each (name, folder) that holds a reward head (<c>config.json</c> + <c>head.safetensors</c>, or the Otter form's
    /// <c>otter.safetensors</c>) as tenant <c>public</c> through the store's validation, unless the store already has a head of
    /// that name; a folder that is absent is skipped, one that fails validation is logged and skipped.
    /// </summary>
    internal static async Task SeedPublicRewardHeadsAsync(IServiceProvider services, string modelId, IReadOnlyList<(string Name, string Folder)> heads, CancellationToken cancellationToken)
    {
        var store = services.GetRequiredService<IRewardHeadStore>();
        var ingestor = services.GetRequiredService<RewardHeadIngestor>();
        var logger = services.GetRequiredService<ILoggerFactory>().CreateLogger("Serving.Standalone");
        var keys = services.GetRequiredService<ApiKeyStore>();
        if (heads.Any(h => File.Exists(Path.Combine(h.Folder, RewardHeadFiles.ConfigName))) && await keys.GetTenantAsync(PublicTenant, cancellationToken) is null)
            await keys.CreateTenantAsync(PublicTenant, "Public adapters and reward heads (every tenant may use them)", cancellationToken);
        var seeded = new List<string>();
        foreach (var (name, folder) in heads)
        {
            if (!File.Exists(Path.Combine(folder, RewardHeadFiles.ConfigName))) continue;
            if (await store.GetMetadataAsync(PublicTenant, name, null, cancellationToken) is not null) continue;
            try
            {
                await ingestor.IngestAsync(new RewardHeadUpload(PublicTenant, name, modelId, RewardHeadFiles.ReadFolder(folder)), cancellationToken);
                seeded.Add(name);
            }
            catch (Exception e) when (e is AdapterValidationException or DanglingLinkException)
            {
                LogHeadNotSeeded(logger, folder, e.Message);
            }
        }
        if (seeded.Count > 0) LogHeadsSeeded(logger, seeded.Count, string.Join(", ", seeded));
    }

    [LoggerMessage(EventId = EventIds.PublicRewardHeadsSeeded, Level = LogLevel.Information, Message = "Seeded {Count} reward heads of tenant public ({Names})")]
    private static partial void LogHeadsSeeded(ILogger logger, int count, string names);

    [LoggerMessage(EventId = EventIds.PublicRewardHeadNotSeeded, Level = LogLevel.Warning, Message = "Reward head folder {Folder} not seeded: {Reason}")]
    private static partial void LogHeadNotSeeded(ILogger logger, string folder, string reason);

    [LoggerMessage(EventId = EventIds.PublicAdaptersSeeded, Level = LogLevel.Information, Message = "Seeded {Count} adapters of tenant public ({Names}) from {Folder}")]
    private static partial void LogSeeded(ILogger logger, int count, string names, string folder);

    [LoggerMessage(EventId = EventIds.PublicAdapterNotSeeded, Level = LogLevel.Warning, Message = "Adapter folder {Folder} not seeded: {Reason}")]
    private static partial void LogNotSeeded(ILogger logger, string folder, string reason);

    private static WebApplication BuildNode(IConfiguration configuration, Dictionary<string, string?> settings, Action<IServiceCollection>? services)
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
        Layer(builder, configuration, settings);
        services?.Invoke(builder.Services);
        builder.AddNode();
        var app = builder.Build();
        app.MapNode();
        return app;
    }

    private static WebApplication BuildGateway(IConfiguration configuration, Dictionary<string, string?> settings, Action<IServiceCollection>? services)
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
        Layer(builder, configuration, settings);
        services?.Invoke(builder.Services);
        builder.AddGateway();
        // The node's phase spans (its activity source is named as its meter) and its metrics leave through this host's
        // exporters: OTLP (the node's is off) and the public /metrics.
        builder.Services.ConfigureOpenTelemetryTracerProvider(t => t.AddSource(NodeMetrics.MeterName));
        builder.Services.ConfigureOpenTelemetryMeterProvider(m => m.AddMeter(NodeMetrics.MeterName));
        var app = builder.Build();
        app.MapGateway();
        return app;
    }

    /// <summary>The process configuration, then this part's fixed settings; the outer host owns signals and shutdown.</summary>
    private static void Layer(WebApplicationBuilder builder, IConfiguration configuration, Dictionary<string, string?> settings)
    {
        DropAppSettings(builder.Configuration);
        builder.Configuration.AddConfiguration(configuration);
        builder.Configuration.AddInMemoryCollection(settings);
        builder.Services.AddSingleton<IHostLifetime, OwnedLifetime>();
    }

    /// <summary>
    /// Removes <c>appsettings*.json</c> sources: the referenced gateway's file is copied next to this executable, and this
    /// host's defaults live in <c>standalone.json</c>.
    /// </summary>
    internal static void DropAppSettings(IConfigurationBuilder configuration)
    {
        var appSettings = configuration.Sources.OfType<Microsoft.Extensions.Configuration.Json.JsonConfigurationSource>()
            .Where(s => s.Path?.StartsWith("appsettings", StringComparison.OrdinalIgnoreCase) == true).ToList();
        foreach (var s in appSettings) configuration.Sources.Remove(s);
    }

    private static string Address(WebApplication app)
    {
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        var b = new UriBuilder(address);
        if (b.Host is "0.0.0.0" or "[::]" or "::" or "+" or "*") b.Host = "127.0.0.1";
        return b.Uri.GetLeftPart(UriPartial.Authority);
    }

    /// <summary>Until the gateway has seen the node's heartbeat (its readiness), bounded.</summary>
    private static async Task WaitReadyAsync(string gatewayUrl, CancellationToken cancellationToken)
    {
        using var http = new HttpClient { BaseAddress = new Uri(gatewayUrl), Timeout = TimeSpan.FromSeconds(5) };
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (true)
        {
            try
            {
                using var r = await http.GetAsync(Serving.ServiceDefaults.HealthEndpoints.ReadyPath, cancellationToken);
                if (r.IsSuccessStatusCode) return;
            }
            catch (HttpRequestException)
            {
            }
            if (DateTime.UtcNow > deadline) throw new TimeoutException("The gateway did not see the node within 60 s (heartbeats not arriving?).");
            await Task.Delay(100, cancellationToken);
        }
    }

    /// <summary>
    /// <c>models/demo</c> in the nearest folder at or above the executable's folder, else above the working directory.
    /// </summary>
    public static string FindDemoModel()
    {
        foreach (var start in new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory() })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                string candidate = Path.Combine(dir.FullName, "models", "demo");
                if (File.Exists(Path.Combine(candidate, "config.json"))) return candidate;
            }
        }
        throw new ArgumentException("models/demo not found above the executable or the working directory; set --Standalone:ModelPath.");
    }

    /// <summary>Gateway first (no new requests), then the node (drains running streams), then the store.</summary>
    public Task StopAsync() => Interlocked.Exchange(ref _stopped, 1) == 0 ? StopAsync(_gateway, _node, _garnet) : Task.CompletedTask;

    private static async Task StopAsync(WebApplication? gateway, WebApplication? node, EmbeddedGarnet? garnet)
    {
        if (gateway is not null)
        {
            await gateway.StopAsync();
            await gateway.DisposeAsync();
        }
        if (node is not null)
        {
            await node.StopAsync();
            await node.DisposeAsync();
        }
        garnet?.Dispose();
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync() => await StopAsync();

    /// <summary>Lifetime of an inner app: no signal handling of its own (the outer host's console lifetime has it).</summary>
    private sealed class OwnedLifetime : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
