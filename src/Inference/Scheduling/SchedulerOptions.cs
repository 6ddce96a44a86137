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
    /// Mixed steps (needs a decoder whose model was loaded with packed steps): each engine step carries the decode token
    /// of every running row and chunks of waiting prompts together, so a new prompt never stalls running streams for a
    /// whole prefill and prompts are processed as one batch. Off: prompts are prefilled one by one between decode steps.
    /// </summary>
    public bool MixedSteps { get; init; }

    /// <summary>
    /// With <see cref="MixedSteps"/>: tokens one step may carry. Decode rows go first (one token each); prompt chunks fill
    /// the rest, at most <see cref="MaxPrefillTokensPerStep"/>. On a CPU a step costs about its tokens: a smaller budget
    /// keeps running streams' inter-token latency flat and starts the first prompts of a burst sooner; a larger one takes
    /// a long prompt in fewer steps. 128 gave a burst of 32 requests its best first-token latency on a 2-core CPU (docs/scheduling.md).
    /// The engine's step buffers must hold it (<c>RuntimeOptions.MaxStepTokens</c>).
    /// </summary>
    public int MaxTokensPerStep { get; init; } = 128;

    /// <summary>
    /// Prefix reuse: a request whose prompt starts with at least <see cref="MinSharedPrefixTokens"/> tokens that a running
    /// request on the same adapter already has in its KV cache (a tenant's shared system prompt, the same question
    /// asked again) copies those K/V instead of prefilling them. Off by default.
    /// </summary>
    public bool PrefixReuse { get; init; }

    /// <summary>With <see cref="PrefixReuse"/>: the shortest common prefix worth a copy (tokens).</summary>
    public int MinSharedPrefixTokens { get; init; } = 16;

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
        if (MinSharedPrefixTokens < 1) throw new ArgumentOutOfRangeException(nameof(MinSharedPrefixTokens), MinSharedPrefixTokens, "must be at least 1");
        if (MaxTokensPerStep < 1) throw new ArgumentOutOfRangeException(nameof(MaxTokensPerStep), MaxTokensPerStep, "must be at least 1");
        if (MaxPrefillTokensPerStep < 1) throw new ArgumentOutOfRangeException(nameof(MaxPrefillTokensPerStep), MaxPrefillTokensPerStep, "must be at least 1");
    }
}
