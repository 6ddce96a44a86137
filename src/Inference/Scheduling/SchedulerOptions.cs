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

    /// <summary>Checks ranges.</summary>
    public void Validate()
    {
        if (MaxQueue < 1) throw new ArgumentOutOfRangeException(nameof(MaxQueue), MaxQueue, "must be at least 1");
        if (MaxPrefillTokensPerStep < 1) throw new ArgumentOutOfRangeException(nameof(MaxPrefillTokensPerStep), MaxPrefillTokensPerStep, "must be at least 1");
    }
}
