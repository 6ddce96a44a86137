using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Serving.AdapterStore.Compression;
using Serving.AdapterStore.Ingest;
using Serving.AdapterStore.Peft;
using Serving.AdapterStore.Storage;
using Serving.Checkpoints;
using Serving.Contracts.Models;
using Serving.Inference.Node.Hosting;
using Serving.Inference.Node.Telemetry;
using StackExchange.Redis;

namespace Serving.Inference.Node.Adapters;

/// <summary>Registration of the node's adapter tiers and their source.</summary>
public static class AdapterHostingExtensions
{
    /// <summary>
    /// <c>Node:Redis</c>: one shared <see cref="IConnectionMultiplexer"/> (also for the registry's heartbeats) and the
    /// Redis adapter store. <c>Node:AdapterDirectory</c>: an in-process <see cref="LocalAdapterStore"/> filled at start.
    /// Neither: no store (the node serves the base only). Always: <see cref="AdapterManager"/> and its hosted service.
    /// </summary>
    public static IServiceCollection AddNodeAdapters(this IServiceCollection services)
    {
        services.TryAddSingleton<IConnectionMultiplexer>(sp =>
        {
            var o = sp.GetRequiredService<IOptions<NodeOptions>>().Value;
            if (string.IsNullOrWhiteSpace(o.Redis)) throw new InvalidOperationException("Node:Redis is not set.");
            var config = sp.GetRequiredService<IOptions<RedisClientOptions>>().Value.ToConfiguration(o.Redis);
            config.AbortOnConnectFail = false; // start and serve cached adapters while the store is down
            return ConnectionMultiplexer.Connect(config);
        });
        services.TryAddSingleton<IAdapterStore>(sp =>
        {
            var o = sp.GetRequiredService<IOptions<NodeOptions>>().Value;
            if (!string.IsNullOrWhiteSpace(o.Redis))
            {
                return new RedisAdapterStore(sp.GetRequiredService<IConnectionMultiplexer>(), new AdapterStoreOptions { KeyPrefix = o.AdapterKeyPrefix, KeyLayout = o.AdapterKeyLayout },
                    sp.GetRequiredService<TimeProvider>(), sp.GetService<ILogger<RedisAdapterStore>>());
            }
            return new LocalAdapterStore(sp.GetRequiredService<TimeProvider>());
        });
        services.TryAddSingleton(sp =>
        {
            var o = sp.GetRequiredService<IOptions<NodeOptions>>();
            return new AdapterManager(sp.GetRequiredService<ModelHost>(), o, sp.GetRequiredService<NodeMetrics>(), sp.GetRequiredService<TimeProvider>(),
                sp.GetRequiredService<ILogger<AdapterManager>>(), o.Value.AdaptersEnabled ? sp.GetRequiredService<IAdapterStore>() : null);
        });
        services.AddHostedService<AdapterHostedService>();
        return services;
    }
}

/// <summary>At start: fills the local store from <c>Node:AdapterDirectory</c> (if set) and subscribes to store events.</summary>
internal sealed class AdapterHostedService(AdapterManager manager, ModelHost host, IOptions<NodeOptions> options, ILogger<AdapterHostedService> logger)
    : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var o = options.Value;
        if (manager.Store is LocalAdapterStore local && !string.IsNullOrWhiteSpace(o.AdapterDirectory))
        {
            var count = await LoadDirectoryAsync(local, o.AdapterDirectory, host, logger, cancellationToken).ConfigureAwait(false);
            NodeLog.AdapterDirectoryLoaded(logger, o.AdapterDirectory, count);
        }
        await manager.StartAsync(cancellationToken).ConfigureAwait(false);
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>
    /// Publishes every PEFT folder under <paramref name="directory"/> (name = folder name) as tenant <c>public</c>,
    /// through the store's ingest pipeline (validation against the base model, lossless container). Folders and files
    /// may be symbolic links (e.g. into a Hugging Face cache's snapshots). A folder that fails validation, or a link whose
    /// target is gone, is logged with the reason (naming the link) and skipped.
    /// </summary>
    internal static async Task<int> LoadDirectoryAsync(IAdapterStore store, string directory, ModelHost host, ILogger logger, CancellationToken cancellationToken)
    {
        var catalog = new StaticBaseModelCatalog().Add(host.ModelId, host.Config);
        var ingestor = new AdapterIngestor(store, catalog);
        var count = 0;
        // A link to a folder that is gone is listed as neither folder nor adapter: name it rather than skip it silently.
        foreach (var entry in Directory.EnumerateFiles(directory).Order(StringComparer.Ordinal))
        {
            try
            {
                LinkedFiles.ThrowIfDangling(entry);
            }
            catch (DanglingLinkException e)
            {
                NodeLog.AdapterFolderSkipped(logger, entry, e.Message);
            }
        }
        foreach (var folder in Directory.EnumerateDirectories(directory).Order(StringComparer.Ordinal))
        {
            var name = Path.GetFileName(folder);
            var config = Path.Combine(folder, PeftFiles.ConfigName);
            var weights = Path.Combine(folder, PeftFiles.WeightsName);
            if (!File.Exists(config) || !File.Exists(weights))
            {
                NodeLog.AdapterFolderSkipped(logger, folder, $"needs {PeftFiles.ConfigName} and {PeftFiles.WeightsName}");
                continue;
            }
            try
            {
                var files = new PeftFiles(await LinkedFiles.ReadAllBytesAsync(config, cancellationToken).ConfigureAwait(false),
                    await LinkedFiles.ReadAllBytesAsync(weights, cancellationToken).ConfigureAwait(false));
                await ingestor.IngestAsync(new UploadRequest(ModelId.PublicTenant, name, host.ModelId, files,
                    new CodecOptions { Codec = AdapterCodec.Lossless }, KeepOriginal: false), cancellationToken).ConfigureAwait(false);
                count++;
            }
            catch (AdapterValidationException e)
            {
                NodeLog.AdapterFolderSkipped(logger, folder, e.Message);
            }
            catch (DanglingLinkException e)
            {
                NodeLog.AdapterFolderSkipped(logger, folder, e.Message);
            }
        }
        return count;
    }
}
