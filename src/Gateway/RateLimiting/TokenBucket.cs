namespace Serving.Gateway.RateLimiting;

/// <summary>
/// One tenant's token budget: holds at most <c>limit</c> tokens and refills continuously at <c>limit</c> tokens a minute,
/// read from a <see cref="TimeProvider"/>. Exact integer arithmetic: the level is kept in units of 1/(60·f) token, f the
/// clock's timestamp frequency, so one tick of the clock adds exactly <c>limit</c> units and nothing is lost to
/// rounding however often the bucket is read. The level may fall below zero: a request that used more than it reserved
/// (alignment candidates) is charged in full, and that debt is refilled before anything else is admitted. Thread-safe.
/// </summary>
internal sealed class TokenBucket
{
    private readonly Lock _gate = new();
    private readonly TimeProvider _time;
    private readonly Int128 _unit;
    private Int128 _level;
    private long _stamp;
    private long _reserved;

    /// <summary>A full bucket of <paramref name="limit"/> tokens.</summary>
    public TokenBucket(TimeProvider time, int limit)
    {
        _time = time;
        _unit = (Int128)60 * time.TimestampFrequency;
        _level = limit * _unit;
        _stamp = time.GetTimestamp();
    }

    /// <summary>
    /// Takes <paramref name="tokens"/> when the bucket holds them; otherwise takes nothing and says how long until it
    /// will (<paramref name="tokens"/> must not exceed <paramref name="limit"/>).
    /// </summary>
    public bool TryTake(long tokens, int limit, out TimeSpan retryAfter)
    {
        lock (_gate)
        {
            Refill(limit);
            Int128 need = tokens * _unit;
            if (_level >= need)
            {
                _level -= need;
                _reserved += tokens;
                retryAfter = TimeSpan.Zero;
                return true;
            }
            // Each tick adds `limit` units.
            Int128 ticks = (need - _level + limit - 1) / limit;
            retryAfter = TimeSpan.FromSeconds((double)ticks / _time.TimestampFrequency);
            return false;
        }
    }

    /// <summary>
    /// Ends a reservation of <paramref name="reserved"/> tokens that used <paramref name="charged"/>: gives back the
    /// difference (never filling past <paramref name="limit"/>) or takes the excess (into debt when it must).
    /// </summary>
    public void Settle(long reserved, long charged, int limit)
    {
        lock (_gate)
        {
            Refill(limit);
            _reserved -= reserved;
            _level += (reserved - charged) * _unit;
            Int128 capacity = limit * _unit;
            if (_level > capacity) _level = capacity;
        }
    }

    /// <summary>Whole tokens available now (negative while in debt), and the tokens held by requests in flight.</summary>
    public (long Available, long Reserved) Read(int limit)
    {
        lock (_gate)
        {
            Refill(limit);
            Int128 whole = _level / _unit;
            if (_level < 0 && whole * _unit != _level) whole--; // floor, not truncation
            return ((long)whole, _reserved);
        }
    }

    private void Refill(int limit)
    {
        long now = _time.GetTimestamp();
        long elapsed = now - _stamp;
        _stamp = now;
        Int128 capacity = limit * _unit;
        if (elapsed > 0 && _level < capacity) _level = Int128.Min(capacity, _level + (Int128)elapsed * limit);
        else if (_level > capacity) _level = capacity; // the limit was lowered
    }
}
