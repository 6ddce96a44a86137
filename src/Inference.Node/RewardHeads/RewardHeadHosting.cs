using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Serving.AdapterStore.RewardHeads;
using Serving.AdapterStore.Storage;
using Serving.Inference.Node.Hosting;
using StackExchange.Redis;

namespace Serving.Inference.Node.RewardHeads;

/// <summary>Registration of the node's reward heads and their sources.</summary>
public static class RewardHeadHostingExtensions
{
    /// <summary>
    /// The folder source (always; empty without <c>Node:RewardHeads</c>), the store source over the node's Redis
    /// connection when <c>Node:Redis</c> is set, the <see cref="RewardHeadCatalog"/> over them, and the hosted service
    /// that loads the folders and subscribes to the store's events at start.
    /// </summary>
    public static IServiceCollection AddNodeRewardHeads(this IServiceCollection services)
    {
        services.AddSingleton<DirectoryRewardHeadSource>();
        services.TryAddSingleton<IRewardHeadStore>(sp => new RedisRewardHeadStore(sp.GetRequiredService<IConnectionMultiplexer>(),
            new AdapterStoreOptions
            {
                KeyPrefix = sp.GetRequiredService<IOptions<NodeOptions>>().Value.AdapterKeyPrefix,
                KeyLayout = sp.GetRequiredService<IOptions<NodeOptions>>().Value.AdapterKeyLayout,
            },
            sp.GetRequiredService<TimeProvider>(), sp.GetService<ILogger<RedisRewardHeadStore>>()));
        services.AddSingleton(sp => new StoreRewardHeadSource(sp.GetRequiredService<IRewardHeadStore>(), sp.GetRequiredService<ModelHost>(),
            sp.GetRequiredService<IOptions<NodeOptions>>().Value.RewardHeadCacheSize, sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<ILogger<StoreRewardHeadSource>>()));
        services.AddSingleton(sp =>
        {
            var o = sp.GetRequiredService<IOptions<NodeOptions>>();
            var sources = new List<IRewardHeadSource> { sp.GetRequiredService<DirectoryRewardHeadSource>() };
            if (!string.IsNullOrWhiteSpace(o.Value.Redis)) sources.Add(sp.GetRequiredService<StoreRewardHeadSource>());
            return new RewardHeadCatalog(sources, o);
        });
        services.AddHostedService<RewardHeadHostedService>();
        return services;
    }
}

/// <summary>At start: loads the folder heads (a bad folder stops the start) and subscribes the store source to events.</summary>
internal sealed class RewardHeadHostedService(RewardHeadCatalog catalog) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        foreach (var source in catalog.Sources)
        {
            if (source is StoreRewardHeadSource store) await store.StartAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
