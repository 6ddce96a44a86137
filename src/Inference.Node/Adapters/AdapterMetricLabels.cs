namespace Serving.Inference.Node.Adapters;

/// <summary>
/// Metric label of an adapter key with bounded cardinality: its id <c>tenant/name</c> for the first
/// <see cref="AdapterManager.MaxAdapterLabels"/> ids, <c>other</c> after that, <c>merge</c> for merges.
/// </summary>
internal sealed class AdapterMetricLabels
{
    private readonly Lock _gate = new();
    private readonly Dictionary<string, string> _labels = new(StringComparer.Ordinal); // id → label
    private readonly Dictionary<string, string> _keyLabels = new(StringComparer.Ordinal); // key → label

    /// <summary>The label of <paramref name="key"/>.</summary>
    public string Label(string key)
    {
        lock (_gate)
        {
            if (_keyLabels.TryGetValue(key, out var label)) return label;
            if (key.StartsWith("merge:", StringComparison.Ordinal))
            {
                label = "merge";
            }
            else
            {
                var id = HostAdapter.IdOf(key);
                if (!_labels.TryGetValue(id, out label!))
                {
                    label = _labels.Count < AdapterManager.MaxAdapterLabels ? id : "other";
                    if (label != "other") _labels[id] = label;
                }
            }
            if (_keyLabels.Count > 4096) _keyLabels.Clear();
            _keyLabels[key] = label;
            return label;
        }
    }
}
