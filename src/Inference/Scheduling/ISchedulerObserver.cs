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

    /// <summary>A running request's decoding strategy held no row and was not done (a strategy defect): it was ended with an abort.</summary>
    void OnStrategyStalled(GenerationHandle request) { }
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

/// <summary>Several observers, called in order (the host's own first, then any the application registered).</summary>
public sealed class CompositeSchedulerObserver(IReadOnlyList<ISchedulerObserver> observers) : ISchedulerObserver
{
    private readonly ISchedulerObserver[] _observers = [.. observers];

    public void OnRequestStarted(GenerationHandle request, TimeSpan queued)
    {
        foreach (var o in _observers) o.OnRequestStarted(request, queued);
    }

    public void OnFirstToken(GenerationHandle request, TimeSpan timeToFirstToken)
    {
        foreach (var o in _observers) o.OnFirstToken(request, timeToFirstToken);
    }

    public void OnOutputToken(TimeSpan sincePrevious)
    {
        foreach (var o in _observers) o.OnOutputToken(sincePrevious);
    }

    public void OnPromptTokens(int count)
    {
        foreach (var o in _observers) o.OnPromptTokens(count);
    }

    public void OnRequestFinished(GenerationHandle request, FinishReason reason)
    {
        foreach (var o in _observers) o.OnRequestFinished(request, reason);
    }

    public void OnStepFailed(Exception error)
    {
        foreach (var o in _observers) o.OnStepFailed(error);
    }

    public void OnAdapterActivated(string key, int slot, string? evicted, TimeSpan copy)
    {
        foreach (var o in _observers) o.OnAdapterActivated(key, slot, evicted, copy);
    }

    public void OnAdapterSlotHit(string key)
    {
        foreach (var o in _observers) o.OnAdapterSlotHit(key);
    }

    public void OnStrategyStalled(GenerationHandle request)
    {
        foreach (var o in _observers) o.OnStrategyStalled(request);
    }
}
