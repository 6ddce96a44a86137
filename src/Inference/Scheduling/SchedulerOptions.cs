namespace Serving.Inference.Scheduling;

/// <summary>Limits of a <see cref="GenerationScheduler"/>.</summary>
public sealed record SchedulerOptions
{
    /// <summary>Requests that may wait for a KV slot; a submit beyond it is refused (<see cref="SubmitStatus.QueueFull"/>).</summary>
    public int MaxQueue { get; init; } = 64;

    /// <summary>
    /// Prompt tokens prefilled per iteration (between two decode steps), so running streams keep flowing while newcomers
    /// join; a longer prompt is prefilled in chunks over several iterations. At least one token per iteration.
    /// </summary>
    public int MaxPrefillTokensPerStep { get; init; } = 512;

    /// <summary>
    /// Iterations a request may be passed over for want of a free adapter slot while later requests go ahead; after
    /// that, no later request may take or keep filling a slot until it has one (no starvation). Its wait is then
    /// bounded by this plus the longest remaining generation among the slots' rows.
    /// </summary>
    public int AdapterFairnessSteps { get; init; } = 32;

    /// <summary>Checks ranges.</summary>
    public void Validate()
    {
        if (MaxQueue < 1) throw new ArgumentOutOfRangeException(nameof(MaxQueue), MaxQueue, "must be at least 1");
        if (AdapterFairnessSteps < 0) throw new ArgumentOutOfRangeException(nameof(AdapterFairnessSteps), AdapterFairnessSteps, "must be non-negative");
        if (MaxPrefillTokensPerStep < 1) throw new ArgumentOutOfRangeException(nameof(MaxPrefillTokensPerStep), MaxPrefillTokensPerStep, "must be at least 1");
    }
}
