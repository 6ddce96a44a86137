namespace Serving.LoadGen.Metrics;

/// <summary>Latency targets for goodput (vLLM's --goodput): a request is good when it meets every target given.</summary>
/// <param name="TtftMs">Time to first token limit, ms.</param>
/// <param name="TpotMs">Time per output token limit, ms (a request with one output token has TPOT 0).</param>
/// <param name="E2eMs">End-to-end latency limit, ms.</param>
public sealed record SloTargets(double? TtftMs = null, double? TpotMs = null, double? E2eMs = null)
{
    /// <summary>True when at least one target is set.</summary>
    public bool Any => TtftMs is not null || TpotMs is not null || E2eMs is not null;
}
