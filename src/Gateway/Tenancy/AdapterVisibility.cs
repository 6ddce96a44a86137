using System.Collections.Concurrent;
using Microsoft.Extensions.Options;
using Serving.AdapterStore.Storage;
using Serving.Contracts.Models;
using Serving.Gateway.Routing;

namespace Serving.Gateway.Tenancy;

/// <summary>
/// Which adapters a tenant may use: its own and those of <see cref="ModelId.PublicTenant"/>. Anything else is reported
/// exactly like a missing adapter (404), so the answer never confirms that another tenant's adapter exists.
/// Lookups are cached for <see cref="RoutingOptions.AdapterCacheTtl"/> and served stale while the store is down.
/// </summary>
public sealed class AdapterVisibility(IAdapterStore store, IOptions<RoutingOptions> options, TimeProvider time)
{
    private readonly ConcurrentDictionary<(string, string), (AdapterMetadata? Meta, DateTimeOffset At)> _cache = new();

    /// <summary>The adapter's owner as the caller may use it, or null when the model names nothing visible.</summary>
    public static string? OwnerFor(ModelId model, string callerTenant) =>
        model.Tenant is null ? callerTenant
        : model.Tenant == callerTenant || model.Tenant == ModelId.PublicTenant ? model.Tenant
        : null;

    /// <summary>Metadata of a visible adapter, null when it does not exist for the caller.</summary>
    /// <exception cref="StoreUnavailableException">The store is unreachable and nothing is cached.</exception>
    public async Task<AdapterMetadata?> FindAsync(ModelId model, string callerTenant, CancellationToken cancellationToken)
    {
        if (model.Adapter is null) return null;
        string? owner = OwnerFor(model, callerTenant);
        if (owner is null || !AdapterKeys.IsValidTenant(owner) || !AdapterKeys.IsValidName(model.Adapter)) return null;
        var key = (owner, model.Adapter);
        var now = time.GetUtcNow();
        if (_cache.TryGetValue(key, out var c) && now - c.At < options.Value.AdapterCacheTtl) return Match(c.Meta, model);
        try
        {
            var meta = await store.GetMetadataAsync(owner, model.Adapter, null, cancellationToken);
            if (_cache.Count > 100_000) _cache.Clear();
            _cache[key] = (meta, now);
            return Match(meta, model);
        }
        catch (StoreUnavailableException)
        {
            if (c.At != default) return Match(c.Meta, model);
            throw;
        }
    }

    /// <summary>Forgets cached lookups of one adapter (after a delete seen through the store's events).</summary>
    public void Invalidate(string tenant, string name) => _cache.TryRemove((tenant, name), out _);

    private static AdapterMetadata? Match(AdapterMetadata? meta, ModelId model) =>
        meta is not null && meta.BaseModel == model.BaseModel ? meta : null;
}

/// <summary>Drops cached adapter lookups when the store announces a publish or delete.</summary>
internal sealed class AdapterEventsListener(IAdapterStore store, AdapterVisibility visibility) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        IAsyncDisposable? subscription = null;
        while (subscription is null && !stoppingToken.IsCancellationRequested)
        {
            try
            {
                subscription = await store.SubscribeAsync(e => visibility.Invalidate(e.Tenant, e.Name), stoppingToken);
            }
            catch (StoreUnavailableException)
            {
                await Task.Delay(TimeSpan.FromSeconds(1), stoppingToken);
            }
        }
        try
        {
            await Task.Delay(Timeout.Infinite, stoppingToken);
        }
        catch (OperationCanceledException)
        {
        }
        if (subscription is not null) await subscription.DisposeAsync();
    }
}
