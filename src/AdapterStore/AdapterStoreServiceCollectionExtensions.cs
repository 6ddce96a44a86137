using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Serving.AdapterStore.Api;
using Serving.AdapterStore.Ingest;
using Serving.AdapterStore.Storage;
using StackExchange.Redis;

namespace Serving.AdapterStore;

/// <summary>Registration of the adapter store.</summary>
public static class AdapterStoreServiceCollectionExtensions
{
    /// <summary>
    /// Registers the store: Redis at <see cref="AdapterStoreOptions.RedisConnectionString"/>, or an embedded Garnet on
    /// loopback when it is empty; the ingest pipeline; a single-tenant <see cref="ITenantContext"/> unless one is registered.
    /// The host registers an <see cref="IBaseModelCatalog"/> (e.g. <see cref="StaticBaseModelCatalog"/>).
    /// </summary>
    public static IServiceCollection AddAdapterStore(this IServiceCollection services, AdapterStoreOptions? options = null, AdapterApiOptions? apiOptions = null)
    {
        options ??= new AdapterStoreOptions();
        options.Validate();
        services.TryAddSingleton(options);
        services.TryAddSingleton(apiOptions ?? new AdapterApiOptions());
        services.TryAddSingleton(TimeProvider.System);
        if (string.IsNullOrWhiteSpace(options.RedisConnectionString))
        {
            services.TryAddSingleton(sp => new EmbeddedGarnet(options.EmbeddedPort, options.EmbeddedMemory, sp.GetService<ILoggerFactory>()));
            services.TryAddSingleton<IConnectionMultiplexer>(sp => ConnectionMultiplexer.Connect(sp.GetRequiredService<EmbeddedGarnet>().ConnectionString));
        }
        else
        {
            services.TryAddSingleton<IConnectionMultiplexer>(_ => ConnectionMultiplexer.Connect(options.RedisConnectionString));
        }
        services.TryAddSingleton<IAdapterStore>(sp => new RedisAdapterStore(
            sp.GetRequiredService<IConnectionMultiplexer>(), options, sp.GetRequiredService<TimeProvider>(), sp.GetService<ILogger<RedisAdapterStore>>()));
        services.TryAddSingleton(sp => new AdapterIngestor(sp.GetRequiredService<IAdapterStore>(), sp.GetRequiredService<IBaseModelCatalog>(), sp.GetRequiredService<TimeProvider>()));
        services.TryAddScoped<ITenantContext>(_ => new SingleTenantContext());
        services.AddProblemDetails();
        return services;
    }

    /// <summary>Binds <see cref="AdapterStoreOptions"/> from the <c>AdapterStore</c> section and registers the store.</summary>
    public static IServiceCollection AddAdapterStore(this IServiceCollection services, IConfiguration configuration) =>
        services.AddAdapterStore(
            configuration.GetSection(AdapterStoreOptions.SectionName).Get<AdapterStoreOptions>() ?? new AdapterStoreOptions(),
            configuration.GetSection(AdapterStoreOptions.SectionName + ":Api").Get<AdapterApiOptions>() ?? new AdapterApiOptions());
}
