namespace Serving.Stress.Soak;

/// <summary>What the soak's client saw, counted as it happens (thread-safe).</summary>
internal sealed class SoakCounters
{
    private long _sent, _completed, _cancelled, _refused, _refusedWithoutRetryAfter, _racedDelete, _errors, _uploads, _deletes, _churnErrors, _skipped;

    public long Sent => Interlocked.Read(ref _sent);
    public long Completed => Interlocked.Read(ref _completed);
    public long Cancelled => Interlocked.Read(ref _cancelled);
    public long Refused => Interlocked.Read(ref _refused);
    public long RefusedWithoutRetryAfter => Interlocked.Read(ref _refusedWithoutRetryAfter);
    /// <summary>404 for an adapter the soak had just deleted (a request that raced its delete): expected, not an error.</summary>
    public long RacedDelete => Interlocked.Read(ref _racedDelete);
    /// <summary>Anything else: other statuses, streams cut without [DONE] or an error event, error events, transport failures, timeouts.</summary>
    public long Errors => Interlocked.Read(ref _errors);
    public long Uploads => Interlocked.Read(ref _uploads);
    public long Deletes => Interlocked.Read(ref _deletes);
    public long ChurnErrors => Interlocked.Read(ref _churnErrors);
    /// <summary>Arrivals not sent because <see cref="SoakOptions.MaxInFlight"/> requests were already in flight.</summary>
    public long Skipped => Interlocked.Read(ref _skipped);

    public void CountSent() => Interlocked.Increment(ref _sent);
    public void CountCompleted() => Interlocked.Increment(ref _completed);
    public void CountCancelled() => Interlocked.Increment(ref _cancelled);
    public void CountRefused(bool retryAfter)
    {
        Interlocked.Increment(ref _refused);
        if (!retryAfter) Interlocked.Increment(ref _refusedWithoutRetryAfter);
    }
    public void CountRacedDelete() => Interlocked.Increment(ref _racedDelete);
    public void CountError() => Interlocked.Increment(ref _errors);
    public void CountUpload() => Interlocked.Increment(ref _uploads);
    public void CountDelete() => Interlocked.Increment(ref _deletes);
    public void CountChurnError() => Interlocked.Increment(ref _churnErrors);
    public void CountSkipped() => Interlocked.Increment(ref _skipped);
}
