using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Serving.AdapterStore.Api;
using Serving.AdapterStore.Ingest;
using Serving.AdapterStore.RewardHeads;
using Serving.AdapterStore.Storage;
using StackExchange.Redis;

namespace Serving.AdapterStore;

/// <summary>Registration of the adapter store.</summary>
public static class AdapterStoreServiceCollectionExtensions
{
    /// <summary>
    /// Binds <see cref="AdapterStoreOptions"/> (section <c>AdapterStore</c>) and <see cref="AdapterApiOptions"/>
    /// (<c>AdapterStore:Api</c>), validated at start, and registers the store (see <see cref="AddAdapterStore(IServiceCollection, Action{AdapterStoreOptions}?, Action{AdapterApiOptions}?)"/>).
    /// </summary>
    public static IServiceCollection AddAdapterStore(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<AdapterStoreOptions>().Bind(configuration.GetSection(AdapterStoreOptions.SectionName)).ValidateOnStart();
        services.AddOptions<AdapterApiOptions>().Bind(configuration.GetSection(AdapterApiOptions.SectionName)).ValidateOnStart();
        services.AddOptions<RedisClientOptions>().Bind(configuration.GetSection(RedisClientOptions.SectionName)).ValidateOnStart();
        return services.AddAdapterStoreServices();
    }

    /// <summary>
    /// Registers the store (adapters and reward heads): Redis at <see cref="AdapterStoreOptions.RedisConnectionString"/>
    /// (credentials and TLS from <see cref="RedisClientOptions"/>, section <c>Redis</c>), or an embedded Garnet on
    /// loopback when it is empty; the ingest pipelines; a single-tenant <see cref="ITenantContext"/> unless one is registered.
    /// The options are set by code here, validated at start. The host registers an <see cref="IBaseModelCatalog"/>
    /// (e.g. <see cref="StaticBaseModelCatalog"/>) and maps <see cref="StoreUnavailableException"/> (503, retry) and
    /// <see cref="StoreCorruptException"/> in its exception handler.
    /// </summary>
    public static IServiceCollection AddAdapterStore(this IServiceCollection services, Action<AdapterStoreOptions>? configure = null, Action<AdapterApiOptions>? configureApi = null)
    {
        services.AddOptions<AdapterStoreOptions>().Configure(o => configure?.Invoke(o)).ValidateOnStart();
        services.AddOptions<AdapterApiOptions>().Configure(o => configureApi?.Invoke(o)).ValidateOnStart();
        return services.AddAdapterStoreServices();
    }

    private static IServiceCollection AddAdapterStoreServices(this IServiceCollection services)
    {
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<AdapterStoreOptions>, AdapterStoreOptionsValidator>());
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<AdapterApiOptions>, AdapterApiOptionsValidator>());
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<RedisClientOptions>, RedisClientOptionsValidator>());
        services.TryAddSingleton(TimeProvider.System);
        // Started only when resolved, i.e. when no connection string is configured.
        services.TryAddSingleton(sp =>
        {
            var o = sp.GetRequiredService<IOptions<AdapterStoreOptions>>().Value;
            return EmbeddedGarnet.Start(o, sp.GetService<ILoggerFactory>());
        });
        services.TryAddSingleton<IConnectionMultiplexer>(sp =>
        {
            var o = sp.GetRequiredService<IOptions<AdapterStoreOptions>>().Value;
            return string.IsNullOrWhiteSpace(o.RedisConnectionString)
                ? ConnectionMultiplexer.Connect(sp.GetRequiredService<EmbeddedGarnet>().ConnectionString)
                : ConnectionMultiplexer.Connect(sp.GetRequiredService<IOptions<RedisClientOptions>>().Value.ToConfiguration(o.RedisConnectionString));
        });
        services.TryAddSingleton<IAdapterStore>(sp => new RedisAdapterStore(sp.GetRequiredService<IConnectionMultiplexer>(),
            sp.GetRequiredService<IOptions<AdapterStoreOptions>>().Value, sp.GetRequiredService<TimeProvider>(), sp.GetService<ILogger<RedisAdapterStore>>()));
        services.TryAddSingleton(sp => new AdapterIngestor(sp.GetRequiredService<IAdapterStore>(), sp.GetRequiredService<IBaseModelCatalog>(), sp.GetRequiredService<TimeProvider>()));
        services.TryAddSingleton<IRewardHeadStore>(sp => new RedisRewardHeadStore(sp.GetRequiredService<IConnectionMultiplexer>(),
            sp.GetRequiredService<IOptions<AdapterStoreOptions>>().Value, sp.GetRequiredService<TimeProvider>(), sp.GetService<ILogger<RedisRewardHeadStore>>()));
        services.TryAddSingleton(sp => new RewardHeadIngestor(sp.GetRequiredService<IRewardHeadStore>(), sp.GetRequiredService<IBaseModelCatalog>(), sp.GetRequiredService<TimeProvider>()));
        services.TryAddScoped<ITenantContext>(_ => new SingleTenantContext());
        services.AddProblemDetails();
        return services;
    }
}
