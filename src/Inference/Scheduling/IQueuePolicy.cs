namespace Serving.Inference.Scheduling;

/// <summary>
/// The order in which waiting requests are offered KV rows, and the service accounting it is based on. The scheduler
/// calls it; the policy keeps its own state (vLLM's request_queue seam).
/// </summary>
internal interface IQueuePolicy
{
    /// <summary>Reorders the waiting queue in place (under the scheduler's queue lock; must not allocate per call).</summary>
    void Order(List<ScheduledRequest> waiting);

    /// <summary>A request was admitted (its prompt counts as served).</summary>
    void OnAdmitted(ScheduledRequest request);

    /// <summary>A running request was served <paramref name="tokens"/> more tokens.</summary>
    void OnServed(ScheduledRequest request, int tokens);

    /// <summary>A request ended; <paramref name="tenantHasWaiting"/> tells whether its tenant still has waiting requests.</summary>
    void OnCompleted(ScheduledRequest request, bool tenantHasWaiting);
}
