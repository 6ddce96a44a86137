using Serving.Contracts.Registry;
using Serving.Inference.Node.Hosting;

namespace Serving.Inference.Node.Registry;

/// <summary>
/// The one place the heartbeat takes this node's adapters from (per tier). Register another implementation as a singleton
/// after <c>AddNodeDefaults</c> (the last registration wins) when the node holds adapters in real tiers.
/// </summary>
public interface IAdapterResidencySource
{
    /// <summary>Adapters by tier now, as canonical ids <c>tenant/name</c>.</summary>
    AdapterResidency Snapshot();
}

/// <summary>Default: <see cref="ModelCatalog.LoadedAdapters"/> (what <c>/node/status</c> reports), all on device.</summary>
internal sealed class CatalogAdapterResidency(ModelCatalog catalog) : IAdapterResidencySource
{
    public AdapterResidency Snapshot()
    {
        var loaded = catalog.LoadedAdapters;
        return loaded.Count == 0 ? AdapterResidency.Empty : new AdapterResidency { Device = [.. loaded] };
    }
}
