namespace Serving.LoadGen.Workload;

/// <summary>Everything that determines a generated trace; with the same values the trace is byte-identical.</summary>
public sealed record WorkloadSpec
{
    /// <summary>Seed of every random draw.</summary>
    public ulong Seed { get; init; }

    /// <summary>Number of requests.</summary>
    public int Count { get; init; } = 100;

    /// <summary>Adapter popularity.</summary>
    public AdapterPopularitySpec Adapters { get; init; } = new();

    /// <summary>Prompt length range.</summary>
    public LengthRange PromptLength { get; init; } = new(8, 512);

    /// <summary>Output length range (sent as max_tokens).</summary>
    public LengthRange OutputLength { get; init; } = new(8, 512);

    /// <summary>Target arrival rate in requests per second; +∞ sends everything at once.</summary>
    public double Rate { get; init; } = double.PositiveInfinity;

    /// <summary>Coefficient of variation of the Gamma inter-arrival times (1 = Poisson).</summary>
    public double Cv { get; init; } = 1.0;
}
