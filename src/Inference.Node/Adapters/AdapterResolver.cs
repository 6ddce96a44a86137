using Serving.AdapterStore.Storage;
using Serving.Contracts.Errors;
using Serving.Contracts.Models;
using Serving.Inference.Node.OpenAI;
using Serving.Inference.Node.Telemetry;
using Serving.Inference.Scheduling;

namespace Serving.Inference.Node.Adapters;

/// <summary>
/// Names and visibility: the part of <c>model</c> after <c>base:</c> (or a bare name) to a <c>tenant/name</c> the
/// caller may use (its own tenant or <c>public</c>; anything else is reported as absent, never as forbidden), and the
/// adapters a caller may list. Loading is the <see cref="AdapterLoader"/>'s.
/// </summary>
internal sealed class AdapterResolver(IAdapterStore store, AdapterLoader loader, string baseModel, ILogger logger)
{
    /// <summary>
    /// Resolves <c>tenant/name</c> (only the caller's own tenant or <c>public</c>) or <c>name</c> (the caller's tenant).
    /// <paramref name="callerTenant"/> is <c>X-Serving-Tenant</c> (null: <c>public</c>). Throws a refusal (404 unknown or
    /// not visible, 503 store down).
    /// </summary>
    public Task<AdapterRef> ResolveAsync(string adapter, string? callerTenant, string model, CancellationToken cancellationToken, string? param = "model")
    {
        var caller = callerTenant ?? ModelId.PublicTenant;
        var slash = adapter.IndexOf('/');
        var (tenant, name) = slash < 0 ? (caller, adapter) : (adapter[..slash], adapter[(slash + 1)..]);
        if (!IsValid(tenant, name) || (tenant != caller && tenant != ModelId.PublicTenant))
        {
            throw Refusals.ModelNotFound(model, param);
        }
        return ResolveIdAsync(tenant, name, model, cancellationToken, param);
    }

    /// <summary>
    /// <c>model</c> that is neither the base nor <c>base:...</c>: an adapter name of the caller's tenant or of
    /// <c>public</c>, when exactly one of them has it (both: 400 naming the two full ids).
    /// </summary>
    public async Task<AdapterRef> ResolveBareAsync(string name, string? callerTenant, CancellationToken cancellationToken)
    {
        var caller = callerTenant ?? ModelId.PublicTenant;
        if (!AdapterKeys.IsValidName(name) || !AdapterKeys.IsValidTenant(caller)) throw Refusals.ModelNotFound(name);
        if (caller == ModelId.PublicTenant) return await ResolveIdAsync(caller, name, name, cancellationToken, "model").ConfigureAwait(false);
        var own = await ExistsAsync(caller, name, cancellationToken).ConfigureAwait(false);
        var shared = await ExistsAsync(ModelId.PublicTenant, name, cancellationToken).ConfigureAwait(false);
        if (own && shared)
        {
            throw new RequestRefusedException(ErrorCodes.ModelAmbiguous,
                $"The model '{name}' is ambiguous: use '{baseModel}:{caller}/{name}' or '{baseModel}:{ModelId.PublicTenant}/{name}'.", "model");
        }
        if (!own && !shared) throw Refusals.ModelNotFound(name);
        return await ResolveIdAsync(own ? caller : ModelId.PublicTenant, name, name, cancellationToken, "model").ConfigureAwait(false);
    }

    /// <summary>Adapters of the caller's tenant and of <c>public</c> made for this base model.</summary>
    public async Task<IReadOnlyList<AdapterMetadata>> ListVisibleAsync(string? callerTenant, CancellationToken cancellationToken)
    {
        var caller = callerTenant ?? ModelId.PublicTenant;
        var tenants = caller == ModelId.PublicTenant ? [caller] : new[] { caller, ModelId.PublicTenant };
        var list = new List<AdapterMetadata>();
        try
        {
            foreach (var t in tenants)
            {
                if (!AdapterKeys.IsValidTenant(t)) continue;
                list.AddRange((await store.ListAsync(t, cancellationToken).ConfigureAwait(false)).Where(m => m.BaseModel == baseModel));
            }
        }
        catch (Exception e) when (AdapterManager.IsStoreFailure(e))
        {
            NodeLog.AdapterStoreUnavailable(logger, e.Message);
            throw Refusals.StoreUnavailable(e.Message);
        }
        return list;
    }

    /// <summary>True for a well-formed <c>tenant</c> and <c>name</c>.</summary>
    public static bool IsValid(string tenant, string name) => AdapterKeys.IsValidTenant(tenant) && AdapterKeys.IsValidName(name);

    private async Task<bool> ExistsAsync(string tenant, string name, CancellationToken cancellationToken)
    {
        if (loader.IsMapped(tenant + "/" + name)) return true;
        try
        {
            var meta = await store.GetMetadataAsync(tenant, name, null, cancellationToken).ConfigureAwait(false);
            return meta is not null && meta.BaseModel == baseModel;
        }
        catch (Exception e) when (AdapterManager.IsStoreFailure(e))
        {
            NodeLog.AdapterStoreUnavailable(logger, e.Message);
            throw Refusals.StoreUnavailable(e.Message);
        }
    }

    /// <summary>Resolves <c>tenant/name</c> (already access-checked) to its current version's <see cref="AdapterRef"/>.</summary>
    private async Task<AdapterRef> ResolveIdAsync(string tenant, string name, string model, CancellationToken cancellationToken, string? param)
    {
        var entry = await loader.GetAsync(tenant, name, cancellationToken).ConfigureAwait(false);
        return entry?.Ref ?? throw Refusals.ModelNotFound(model, param);
    }
}
