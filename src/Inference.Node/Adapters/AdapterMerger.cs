using System.Globalization;
using Serving.Checkpoints;
using Serving.Inference.Adapters;
using Serving.Inference.Node.OpenAI;
using Serving.Inference.Node.Telemetry;
using Serving.Inference.Scheduling;

namespace Serving.Inference.Node.Adapters;

/// <summary>
/// Weighted linear merges of adapters (LoRAX's <c>merged_adapters</c>): the parts are resolved as any adapter, summed
/// exactly (<see cref="AdapterFactors.Merge"/>, ranks add up) and cached under a canonical key made of the parts'
/// versioned keys and weights.
/// </summary>
internal sealed class AdapterMerger(AdapterResolver resolver, AdapterLoader loader, HostAdapterCache cache, ModelConfig baseConfig, string baseModel, NodeMetrics metrics)
{
    /// <summary>
    /// The merge of <paramref name="ids"/> (as in <c>model</c>: <c>tenant/name</c>, <c>name</c> or <c>base:...</c>) with
    /// <paramref name="weights"/>; a part the caller may not use is 404 naming <c>merged_adapters.ids[i]</c>.
    /// </summary>
    public async Task<AdapterRef> MergeAsync(IReadOnlyList<string> ids, IReadOnlyList<float> weights, string? callerTenant, CancellationToken cancellationToken)
    {
        var parts = new (AdapterRef Ref, float Weight)[ids.Count];
        var partIds = new string[ids.Count];
        for (var i = 0; i < ids.Count; i++)
        {
            var param = $"merged_adapters.ids[{i}]";
            var id = ids[i];
            if (id.StartsWith(baseModel + ":", StringComparison.Ordinal)) id = id[(baseModel.Length + 1)..];
            else if (id.Contains(':')) throw Refusals.ModelNotFound(ids[i], param);
            var r = await resolver.ResolveAsync(id, callerTenant, ids[i], cancellationToken, param).ConfigureAwait(false);
            parts[i] = (r, weights[i]);
            partIds[i] = HostAdapter.IdOf(r.Key);
        }
        var key = "merge:linear(" + string.Join(",", parts.Select(p => p.Ref.Key + "*" + p.Weight.ToString("R", CultureInfo.InvariantCulture))) + ")";
        if (cache.Get(key) is { } cached)
        {
            metrics.AdapterLookup("host", hit: true);
            return cached.Ref;
        }
        metrics.AdapterLookup("host", hit: false);
        var merged = AdapterFactors.Merge(baseConfig, [.. parts.Select(p => (p.Ref.Factors, p.Weight))]);
        var entry = new HostAdapter(key, null, 0, new AdapterRef(key, merged), partIds);
        loader.AddMergeIfCurrent(entry, [.. parts.Select(p => p.Ref)]);
        return entry.Ref;
    }
}
