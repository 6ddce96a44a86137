namespace Serving.LoadGen.Workload;

/// <summary>Builds a trace as a pure function of a <see cref="WorkloadSpec"/>.</summary>
public static class TraceGenerator
{
    private const ulong AdapterStream = 1;
    private const ulong LengthStream = 2;
    private const ulong PromptStream = 4;

    /// <summary>Generates <see cref="WorkloadSpec.Count"/> requests.</summary>
    public static IReadOnlyList<TraceRequest> Generate(WorkloadSpec spec)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(spec.Count);
        var popularity = new AdapterPopularity(spec.Adapters);
        var adapterRng = new DeterministicRandom(spec.Seed, AdapterStream);
        var lengthRng = new DeterministicRandom(spec.Seed, LengthStream);
        var promptRng = new DeterministicRandom(spec.Seed, PromptStream);
        double[] arrivals = ArrivalProcess.Generate(spec.Count, spec.Rate, spec.Cv, spec.Seed);

        var requests = new TraceRequest[spec.Count];
        for (int i = 0; i < spec.Count; i++)
        {
            string? adapter = popularity.Sample(adapterRng, i);
            int promptTokens = spec.PromptLength.Sample(lengthRng);
            int outputTokens = spec.OutputLength.Sample(lengthRng);
            string prompt = PromptSynthesizer.Synthesize(promptTokens, promptRng);
            requests[i] = new TraceRequest(i, arrivals[i], adapter, promptTokens, outputTokens, prompt);
        }

        return requests;
    }

    /// <summary>The same requests with arrival times regenerated for another rate (used by rate sweeps and replays at a new rate).</summary>
    public static IReadOnlyList<TraceRequest> WithArrivals(IReadOnlyList<TraceRequest> requests, double rate, double cv, ulong seed)
    {
        double[] arrivals = ArrivalProcess.Generate(requests.Count, rate, cv, seed);
        return requests.Select((r, i) => r with { ArrivalSeconds = arrivals[i] }).ToArray();
    }
}
