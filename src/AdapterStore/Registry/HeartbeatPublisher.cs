using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Serving.Contracts.Registry;
using Serving.AdapterStore.Storage;

namespace Serving.AdapterStore.Registry;

/// <summary>
/// What an inference node hosts to join the gateway's pool: publishes <paramref name="snapshot"/>() every
/// <paramref name="interval"/> with <paramref name="ttl"/>, keeps trying while Redis is down (the node keeps serving),
/// and removes the node on orderly shutdown.
/// </summary>
public sealed partial class HeartbeatPublisher(
    NodeRegistry registry, Func<NodeHeartbeat> snapshot, TimeSpan interval, TimeSpan ttl, TimeProvider? time = null, ILogger<HeartbeatPublisher>? logger = null)
    : BackgroundService
{
    private readonly ILogger _logger = (ILogger?)logger ?? Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;
    private string? _nodeId;

    /// <summary>With the default period and TTL (<see cref="RegistryKeys.DefaultInterval"/>, <see cref="RegistryKeys.DefaultTtl"/>).</summary>
    public HeartbeatPublisher(NodeRegistry registry, Func<NodeHeartbeat> snapshot, ILogger<HeartbeatPublisher>? logger = null)
        : this(registry, snapshot, RegistryKeys.DefaultInterval, RegistryKeys.DefaultTtl, null, logger)
    {
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        bool failing = false;
        using var timer = new PeriodicTimer(interval, time ?? TimeProvider.System);
        try
        {
            do
            {
                try
                {
                    var beat = snapshot();
                    _nodeId = beat.NodeId;
                    await registry.PublishHeartbeatAsync(beat, ttl, stoppingToken);
                    if (failing) LogBack(_logger);
                    failing = false;
                }
                catch (StoreUnavailableException e)
                {
                    if (!failing) LogFailing(_logger, e.Message);
                    failing = true;
                }
            }
            while (await timer.WaitForNextTickAsync(stoppingToken));
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken);
        if (_nodeId is null) return;
        try
        {
            await registry.RemoveAsync(_nodeId, cancellationToken);
        }
        catch (Exception e) when (e is StoreUnavailableException or OperationCanceledException)
        {
            // The TTL removes the node anyway.
        }
    }

    [LoggerMessage(EventId = EventIds.HeartbeatFailing, Level = LogLevel.Warning, Message = "Heartbeat not published (registry unreachable); serving goes on: {Reason}")]
    private static partial void LogFailing(ILogger logger, string reason);

    [LoggerMessage(EventId = EventIds.HeartbeatBack, Level = LogLevel.Information, Message = "Heartbeats published again")]
    private static partial void LogBack(ILogger logger);
}
