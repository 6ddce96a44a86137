namespace Serving.Inference.Scheduling;

/// <summary>
/// Per-tenant fairness (VTC-style): waiting requests are ordered by the tokens their tenant has been served (prompt +
/// output of its running and finished requests while it stayed busy), so a tenant with a long backlog does not delay a
/// lightly served one; within a tenant, and with one tenant, the order stays FIFO. A tenant that was idle starts from
/// the least-served busy tenant's count (it cannot bank service); an idle tenant is forgotten, so the table stays small.
/// </summary>
internal sealed class TenantFairQueuePolicy : IQueuePolicy
{
    private readonly Dictionary<string, TenantUsage> _tenants = [];

    /// <summary>Stable insertion sort by tenant service; no allocation once every waiting tenant is known.</summary>
    public void Order(List<ScheduledRequest> waiting)
    {
        if (waiting.Count < 2) return;
        var first = waiting[0].Tenant;
        var mixed = false;
        for (var i = 1; i < waiting.Count && !mixed; i++) mixed = !string.Equals(waiting[i].Tenant, first, StringComparison.Ordinal);
        if (!mixed) return;
        // A tenant seen for the first time starts at the least-served busy tenant's count, frozen from now on.
        var start = MinBusyServed();
        foreach (var job in waiting)
        {
            if (!_tenants.ContainsKey(job.Tenant)) _tenants[job.Tenant] = new TenantUsage { Served = start };
        }
        for (var i = 1; i < waiting.Count; i++)
        {
            var job = waiting[i];
            var key = _tenants[job.Tenant].Served;
            var j = i - 1;
            while (j >= 0 && _tenants[waiting[j].Tenant].Served > key)
            {
                waiting[j + 1] = waiting[j];
                j--;
            }
            waiting[j + 1] = job;
        }
    }

    public void OnAdmitted(ScheduledRequest request)
    {
        if (!_tenants.TryGetValue(request.Tenant, out var usage))
        {
            usage = new TenantUsage { Served = MinBusyServed() };
            _tenants[request.Tenant] = usage;
        }
        usage.Running++;
        usage.Served += request.Handle.PromptTokens;
        request.Usage = usage;
    }

    public void OnServed(ScheduledRequest request, int tokens)
    {
        if (request.Usage is TenantUsage usage) usage.Served += tokens;
    }

    public void OnCompleted(ScheduledRequest request, bool tenantHasWaiting)
    {
        if (request.Usage is TenantUsage usage)
        {
            request.Usage = null;
            usage.Running--;
        }
        if (_tenants.TryGetValue(request.Tenant, out var state) && state.Running == 0 && !tenantHasWaiting) _tenants.Remove(request.Tenant);
    }

    private long MinBusyServed()
    {
        var min = long.MaxValue;
        foreach (var usage in _tenants.Values)
        {
            if (usage.Running > 0) min = Math.Min(min, usage.Served);
        }
        return min == long.MaxValue ? 0 : min;
    }
}

/// <summary>Tokens served to a busy tenant and its running requests.</summary>
internal sealed class TenantUsage
{
    public long Served { get; set; }
    public int Running { get; set; }
}
