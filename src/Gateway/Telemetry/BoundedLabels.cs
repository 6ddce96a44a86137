namespace Serving.Gateway.Telemetry;

/// <summary>
/// Metric label values of bounded cardinality: the first <c>max</c> distinct values keep their own label, every later
/// one is <c>other</c> (as the node labels adapters), so a flood of tenants or adapters cannot grow the series without end.
/// </summary>
internal sealed class BoundedLabels(int max)
{
    private readonly Lock _gate = new();
    private readonly HashSet<string> _own = new(StringComparer.Ordinal);

    /// <summary>The label of <paramref name="value"/>.</summary>
    public string Label(string value)
    {
        lock (_gate)
        {
            if (_own.Contains(value)) return value;
            if (_own.Count >= max) return "other";
            _own.Add(value);
            return value;
        }
    }
}
