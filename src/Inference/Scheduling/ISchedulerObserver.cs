using Serving.Inference.Sampling;

namespace Serving.Inference.Scheduling;

/// <summary>
/// Hooks the host uses for logs and metrics. Called on the scheduler thread, so implementations must be quick and
/// must not allocate per token (<see cref="OnOutputToken"/> runs once per generated token).
/// </summary>
public interface ISchedulerObserver
{
    /// <summary>A request left the queue and got its KV slots.</summary>
    void OnRequestStarted(GenerationHandle request, TimeSpan queued);

    /// <summary>The first token of a request was sampled.</summary>
    void OnFirstToken(GenerationHandle request, TimeSpan timeToFirstToken);

    /// <summary>A token after the first one of a choice; <paramref name="sincePrevious"/> is the inter-token latency.</summary>
    void OnOutputToken(TimeSpan sincePrevious);

    /// <summary>Prompt tokens went through prefill.</summary>
    void OnPromptTokens(int count);

    /// <summary>A request ended (every choice); <paramref name="reason"/> is the first choice's reason.</summary>
    void OnRequestFinished(GenerationHandle request, FinishReason reason);

    /// <summary>An iteration threw; every running request was ended with <see cref="FinishReason.Abort"/>.</summary>
    void OnStepFailed(Exception error);

    /// <summary>
    /// An adapter was copied into device slot <paramref name="slot"/> (hot swap), replacing <paramref name="evicted"/>
    /// (null when the slot was empty); <paramref name="copy"/> is the time the copy took.
    /// </summary>
    void OnAdapterActivated(string key, int slot, string? evicted, TimeSpan copy) { }

    /// <summary>A request for a resident adapter found it in a device slot (a slot hit).</summary>
    void OnAdapterSlotHit(string key) { }
}

/// <summary>Observer that does nothing.</summary>
public sealed class NullSchedulerObserver : ISchedulerObserver
{
    /// <summary>The shared instance.</summary>
    public static readonly NullSchedulerObserver Instance = new();

    public void OnRequestStarted(GenerationHandle request, TimeSpan queued) { }
    public void OnFirstToken(GenerationHandle request, TimeSpan timeToFirstToken) { }
    public void OnOutputToken(TimeSpan sincePrevious) { }
    public void OnPromptTokens(int count) { }
    public void OnRequestFinished(GenerationHandle request, FinishReason reason) { }
    public void OnStepFailed(Exception error) { }
}

/// <summary>A consistent view of the scheduler, published after every iteration.</summary>
public sealed record SchedulerStatus
{
    /// <summary>Requests waiting for KV slots.</summary>
    public int Waiting { get; init; }

    /// <summary>Requests admitted (prefilling or decoding).</summary>
    public int RunningRequests { get; init; }

    /// <summary>Rows (sequences) holding a KV slot.</summary>
    public int RunningRows { get; init; }

    /// <summary>KV slots (most rows at once).</summary>
    public int KvSlots { get; init; }

    /// <summary>Tokens cached over all rows.</summary>
    public long KvTokens { get; init; }

    /// <summary>Tokens the cache holds when every slot is full (slots × max context).</summary>
    public long KvTokenCapacity { get; init; }

    /// <summary>Fraction of KV slots in use, in [0, 1] (the cache is allocated per slot).</summary>
    public double KvUsage => KvSlots == 0 ? 0 : (double)RunningRows / KvSlots;

    /// <summary>False while draining or stopped.</summary>
    public bool Accepting { get; init; }

    /// <summary>Iterations run since start.</summary>
    public long Steps { get; init; }

    /// <summary>Adapter slots (0 when the model serves the base only).</summary>
    public int AdapterSlots { get; init; }

    /// <summary>Keys of the adapters in device slots (resident, whether or not rows use them now).</summary>
    public IReadOnlyList<string> DeviceAdapters { get; init; } = [];

    /// <summary>Requests waiting because every adapter slot is busy with other adapters.</summary>
    public int WaitingForAdapterSlot { get; init; }
}
