using System.Net;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Serving.AdapterStore.Registry;
using Serving.AdapterStore.Storage;
using Serving.Contracts.Registry;
using Serving.Inference.Node.Hosting;
using Serving.Inference.Node.Status;
using Serving.Inference.Node.Telemetry;
using StackExchange.Redis;

namespace Serving.Inference.Node.Registry;

/// <summary>
/// Publishes this node's heartbeat (<see cref="HeartbeatPublisher"/>) once Kestrel is listening, so the advertised
/// address is known; on <c>ApplicationStopping</c> it leaves the registry at once (before the drain), so the gateway
/// stops sending new requests while running streams finish. Redis being down never stops the node from serving.
/// </summary>
internal sealed partial class NodeHeartbeats(
    IOptions<NodeRegistrationOptions> options,
    ModelHost host,
    IAdapterResidencySource adapters,
    Microsoft.AspNetCore.Hosting.Server.IServer server,
    IHostApplicationLifetime lifetime,
    IOptions<RedisClientOptions> redisClient,
    NodeIdentity identity,
    TimeProvider time,
    ILoggerFactory loggers) : IHostedService, IAsyncDisposable
{
    private readonly NodeRegistrationOptions _options = options.Value;
    private readonly ILogger _logger = loggers.CreateLogger<NodeHeartbeats>();
    private readonly DateTimeOffset _startedAt = time.GetUtcNow();
    private ConnectionMultiplexer? _redis;
    private HeartbeatPublisher? _publisher;
    private Task _leaving = Task.CompletedTask;
    private string _nodeId = "";
    private string _baseUrl = "";

    public Task StartAsync(CancellationToken cancellationToken)
    {
        lifetime.ApplicationStarted.Register(Start);
        lifetime.ApplicationStopping.Register(() => _leaving = LeaveAsync());
        return Task.CompletedTask;
    }

    private void Start()
    {
        try
        {
            var address = server.Features.Get<IServerAddressesFeature>()?.Addresses.FirstOrDefault()
                ?? throw new InvalidOperationException("the server reports no address");
            var bound = new Uri(address);
            _baseUrl = AdvertisedUrl(_options.AdvertisedUrl, bound);
            _nodeId = _options.Id ?? $"{Dns.GetHostName()}-{bound.Port}";
            identity.Id = _nodeId;
            var config = redisClient.Value.ToConfiguration(_options.Redis!);
            config.AbortOnConnectFail = false; // start (and serve) while Redis is down; heartbeats resume when it is back
            _redis = ConnectionMultiplexer.Connect(config);
            var registry = new NodeRegistry(_redis, new RegistryKeys(_options.RegistryPrefix), time);
            _publisher = new HeartbeatPublisher(registry, Snapshot, _options.HeartbeatInterval, _options.HeartbeatTtl, time,
                loggers.CreateLogger<HeartbeatPublisher>());
            _publisher.StartAsync(CancellationToken.None).GetAwaiter().GetResult();
            LogJoined(_logger, _nodeId, _baseUrl, _options.RegistryPrefix);
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException || RedisFailures.IsRedisFailure(e))
        {
            LogNotJoined(_logger, e.Message);
        }
    }

    /// <summary>What the gateway routes by: identity, load, KV usage, adapters; not ready once draining.</summary>
    internal NodeHeartbeat Snapshot()
    {
        var s = host.Scheduler.Status;
        return new NodeHeartbeat
        {
            NodeId = _nodeId,
            BaseUrl = _baseUrl,
            Model = host.ModelId,
            Version = NodeStatusApi.Version,
            StartedAt = _startedAt,
            Adapters = adapters.Snapshot(),
            QueueDepth = s.Waiting,
            Running = s.RunningRows,
            MaxRunning = s.KvSlots,
            MaxQueue = host.Scheduler.MaxQueue,
            MaxModelLen = host.MaxContext,
            KvUsage = s.KvUsage,
            Ready = s.Accepting && !lifetime.ApplicationStopping.IsCancellationRequested,
            Timestamp = time.GetUtcNow(),
        };
    }

    private async Task LeaveAsync()
    {
        if (_publisher is null) return;
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(3));
        try
        {
            await _publisher.StopAsync(cts.Token); // stops the beats and removes the node (orderly departure)
        }
        catch (OperationCanceledException)
        {
            // The TTL removes the node anyway.
        }
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_publisher is null) return;
        if (!lifetime.ApplicationStopping.IsCancellationRequested) _leaving = LeaveAsync();
        await _leaving.WaitAsync(cancellationToken);
    }

    public async ValueTask DisposeAsync()
    {
        _publisher?.Dispose();
        if (_redis is not null) await _redis.DisposeAsync();
    }

    /// <summary>The configured URL, else the bound one with a wildcard host replaced by the machine name; ends with '/'.</summary>
    internal static string AdvertisedUrl(string? configured, Uri bound)
    {
        if (!string.IsNullOrWhiteSpace(configured)) return configured.EndsWith('/') ? configured : configured + "/";
        var b = new UriBuilder(bound) { Path = "/" };
        if (b.Host is "0.0.0.0" or "[::]" or "::" or "+" or "*") b.Host = Dns.GetHostName();
        return b.Uri.ToString();
    }

    [LoggerMessage(EventId = EventIds.RegistryJoined, Level = LogLevel.Information, Message = "Node {NodeId} joins the registry (prefix {Prefix}) at {BaseUrl}")]
    private static partial void LogJoined(ILogger logger, string nodeId, string baseUrl, string prefix);

    [LoggerMessage(EventId = EventIds.RegistryNotJoined, Level = LogLevel.Error, Message = "Node does not join the registry: {Reason}")]
    private static partial void LogNotJoined(ILogger logger, string reason);
}

/// <summary>Registration of the node's heartbeats.</summary>
public static class NodeRegistrationExtensions
{
    /// <summary>
    /// Binds <see cref="NodeRegistrationOptions"/> from <c>Node</c>; when <c>Node:Redis</c> is set, hosts
    /// <see cref="NodeHeartbeats"/>. The adapter list comes from <see cref="IAdapterResidencySource"/> (default: the catalog).
    /// </summary>
    public static WebApplicationBuilder AddNodeRegistration(this WebApplicationBuilder builder)
    {
        builder.Services.AddOptions<NodeRegistrationOptions>().Bind(builder.Configuration.GetSection(NodeOptions.Section)).ValidateOnStart();
        builder.Services.AddSingleton<IValidateOptions<NodeRegistrationOptions>, NodeRegistrationOptionsValidator>();
        builder.Services.TryAddSingleton<IAdapterResidencySource, CatalogAdapterResidency>();
        builder.Services.TryAddSingleton<NodeIdentity>();
        if (!string.IsNullOrWhiteSpace(builder.Configuration[$"{NodeOptions.Section}:{nameof(NodeRegistrationOptions.Redis)}"]))
            builder.Services.AddHostedService<NodeHeartbeats>();
        return builder;
    }
}
