namespace Serving.Stress.Soak;

/// <summary>Settings of <c>stress soak</c>.</summary>
internal sealed record SoakOptions
{
    public required string HostExecutable { get; init; }
    public IReadOnlyList<string> HostArgs { get; init; } = [];
    public int Port { get; init; } = 18091;
    public string Model { get; init; } = "demo";
    /// <summary>PEFT folders uploaded (round robin) as the churned adapters; default the demo model's.</summary>
    public required string AdapterSource { get; init; }
    public double Minutes { get; init; } = 30;
    public double WarmupMinutes { get; init; } = 5;
    public double SampleSeconds { get; init; } = 10;
    /// <summary>Mean request rate (Poisson arrivals).</summary>
    public double Rate { get; init; } = 6;
    /// <summary>Uploaded adapters alive at once (each holds one rank of the popularity list).</summary>
    public int UploadedAdapters { get; init; } = 6;
    /// <summary>Every this many seconds one uploaded adapter is replaced: a new one is uploaded, the old one deleted.</summary>
    public double ChurnSeconds { get; init; } = 20;
    public double Alpha { get; init; } = 1.0;
    public double NonStreamShare { get; init; } = 0.2;
    /// <summary>Share of streams the client abandons after a few chunks.</summary>
    public double CancelShare { get; init; } = 0.15;
    public int MaxInFlight { get; init; } = 256;
    /// <summary>Largest allowed growth after warm-up (RSS and managed heap), as a fraction.</summary>
    public double GrowthLimit { get; init; } = 0.05;
    public ulong Seed { get; init; }
    public required string OutDir { get; init; }
    public string? Png { get; init; }
}
