using Serving.Inference.Scheduling;

namespace Serving.Inference.Node.Adapters;

/// <summary>One decoded adapter (or merge) in the host cache.</summary>
/// <param name="Key">Immutable content key: <c>tenant/name@version</c>, or <c>merge:linear(...)</c>.</param>
/// <param name="Id">Canonical id <c>tenant/name</c> (null for a merge).</param>
/// <param name="Version">Store version (0 for a merge).</param>
/// <param name="Ref">What requests carry to the scheduler.</param>
/// <param name="PartIds">Ids a merge is made of (empty otherwise).</param>
public sealed record HostAdapter(string Key, string? Id, long Version, AdapterRef Ref, IReadOnlyList<string> PartIds)
{
    /// <summary>Bytes of the fp32 factors.</summary>
    public long Bytes => Ref.Factors.Bytes;

    /// <summary>The canonical id <c>tenant/name</c> of a versioned key (a merge key is returned as it is).</summary>
    public static string IdOf(string key)
    {
        var at = key.LastIndexOf('@');
        return at < 0 ? key : key[..at];
    }
}

/// <summary>What the node reports about its adapters, per tier (canonical ids <c>tenant/name</c>).</summary>
public sealed record AdapterTiers(
    IReadOnlyList<string> Device,
    IReadOnlyList<string> Host,
    IReadOnlyList<string> Loading,
    IReadOnlyList<string> Pinned,
    IReadOnlyList<string> DeviceKeys,
    int Slots,
    long HostBytes,
    long HostBudgetBytes);
