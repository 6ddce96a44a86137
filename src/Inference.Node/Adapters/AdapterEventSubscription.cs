using Serving.AdapterStore.Storage;
using Serving.Inference.Node.Telemetry;

namespace Serving.Inference.Node.Adapters;

/// <summary>
/// Follows the store's publish/delete events: each one invalidates the adapter in the <see cref="AdapterLoader"/> at
/// once (the next request reads the new version or gets 404; running rows keep what they started with) and reloads a
/// pinned adapter's new version. While the subscription cannot be made it is retried in the background, and mappings
/// fall back to expiring after <see cref="AdapterManager.MappingTtl"/>.
/// </summary>
internal sealed class AdapterEventSubscription(IAdapterStore store, AdapterLoader loader, HostAdapterCache cache, TimeProvider time, ILogger logger)
    : IAsyncDisposable
{
    private readonly CancellationTokenSource _stopping = new();
    private IAsyncDisposable? _subscription;

    /// <summary>Subscribes (retrying in the background while the store is down).</summary>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        try
        {
            _subscription = await store.SubscribeAsync(OnEvent, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (AdapterManager.IsStoreFailure(e))
        {
            NodeLog.AdapterSubscriptionFailed(logger, AdapterManager.MappingTtl.TotalSeconds, e.Message);
            _ = RetryAsync();
        }
    }

    private async Task RetryAsync()
    {
        while (!_stopping.IsCancellationRequested && _subscription is null)
        {
            try
            {
                await Task.Delay(TimeSpan.FromSeconds(5), time, _stopping.Token).ConfigureAwait(false);
                _subscription = await store.SubscribeAsync(OnEvent, _stopping.Token).ConfigureAwait(false);
                loader.ForgetMappings();
            }
            catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (AdapterManager.IsStoreFailure(e))
            {
            }
        }
    }

    private void OnEvent(AdapterEvent e)
    {
        var id = e.Tenant + "/" + e.Name;
        loader.Invalidate(id, e.Current);
        NodeLog.AdapterEvent(logger, e.Tenant, e.Name, e.Op, e.Version, e.Current);
        if (cache.IsPinned(id) && e.Current > 0) _ = ReloadPinnedAsync(e.Tenant, e.Name);
    }

    private async Task ReloadPinnedAsync(string tenant, string name)
    {
        try
        {
            await loader.GetAsync(tenant, name, _stopping.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is Contracts.Errors.RequestRefusedException or OperationCanceledException)
        {
            // The next request retries.
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync().ConfigureAwait(false);
        if (_subscription is not null)
        {
            try
            {
                await _subscription.DisposeAsync().ConfigureAwait(false);
            }
            catch (Exception e) when (AdapterManager.IsStoreFailure(e))
            {
            }
        }
        _stopping.Dispose();
    }
}
