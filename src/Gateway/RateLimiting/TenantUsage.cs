using System.Collections.Concurrent;
using System.Text.Json.Serialization;
using Serving.Gateway.Telemetry;

namespace Serving.Gateway.RateLimiting;

/// <summary>Token usage of one tenant over a window (what <c>GET /admin/tenants/{id}/usage</c> reports).</summary>
/// <param name="Requests">Requests settled (admitted ones; refused ones included, at 0 tokens).</param>
/// <param name="PromptTokens">Prompt tokens the nodes reported.</param>
/// <param name="GeneratedTokens">Tokens the nodes reported generating (every choice, alignment candidates included).</param>
/// <param name="ChargedTokens">
/// Tokens taken from the budget: prompt + generated, plus the reservations kept where the usage stayed unknown (a
/// non-streamed request whose client left, a node that failed mid-answer).
/// </param>
public sealed record UsageTotals(
    [property: JsonPropertyName("requests")] long Requests,
    [property: JsonPropertyName("prompt_tokens")] long PromptTokens,
    [property: JsonPropertyName("generated_tokens")] long GeneratedTokens,
    [property: JsonPropertyName("charged_tokens")] long ChargedTokens);

/// <summary>
/// Per-tenant usage as the gateway settles it: counters with bounded labels (<see cref="GatewayMetrics.RecordTokens"/>)
/// and, for the admin read-out, sliding windows of the last minute (60 one-second slots) and the last hour (60
/// one-minute slots) per tenant, on the budget's clock. The record is per gateway process; tenants idle for an hour are
/// dropped.
/// </summary>
public sealed class TenantUsage(GatewayMetrics metrics, [FromKeyedServices(TokenBudget.ClockKey)] TimeProvider time)
{
    private readonly ConcurrentDictionary<string, Windows> _tenants = new(StringComparer.Ordinal);
    private long _records;

    /// <summary>Records one settled request.</summary>
    /// <param name="tenant">The tenant charged.</param>
    /// <param name="adapter">The adapter used (<c>tenant/name</c>), null for the base model.</param>
    /// <param name="outcome">How it was settled (the metric's <c>outcome</c> label).</param>
    /// <param name="usage">The node's usage when known.</param>
    /// <param name="charged">Tokens taken from the budget.</param>
    public void Record(string tenant, string? adapter, string outcome, UsageReport? usage, long charged)
    {
        long prompt = usage?.PromptTokens ?? 0, generated = usage?.GeneratedTokens ?? 0;
        metrics.RecordTokens(tenant, adapter, outcome, prompt, generated);
        long second = time.GetUtcNow().ToUnixTimeSeconds();
        _tenants.GetOrAdd(tenant, _ => new Windows()).Add(second, prompt, generated, charged);
        if (Interlocked.Increment(ref _records) % 1024 == 0) DropIdle(second);
    }

    /// <summary>The tenant's last minute and last hour; null when it settled nothing in the last hour.</summary>
    public (UsageTotals LastMinute, UsageTotals LastHour)? Read(string tenant)
    {
        if (!_tenants.TryGetValue(tenant, out var w)) return null;
        long second = time.GetUtcNow().ToUnixTimeSeconds();
        var totals = w.Read(second);
        return totals.LastHour.Requests == 0 ? null : totals;
    }

    private void DropIdle(long second)
    {
        foreach (var (tenant, w) in _tenants)
        {
            if (w.IdleSince(second) > 3600) _tenants.TryRemove(tenant, out _);
        }
    }

    /// <summary>Two rings of slots; a slot belongs to the second (or minute) in its stamp and is reset when reused.</summary>
    private sealed class Windows
    {
        private readonly Lock _gate = new();
        private readonly Slot[] _seconds = new Slot[60];
        private readonly Slot[] _minutes = new Slot[60];
        private long _last;

        public void Add(long second, long prompt, long generated, long charged)
        {
            lock (_gate)
            {
                _last = Math.Max(_last, second);
                Bump(_seconds, second, prompt, generated, charged);
                Bump(_minutes, second / 60, prompt, generated, charged);
            }
        }

        public (UsageTotals LastMinute, UsageTotals LastHour) Read(long second)
        {
            lock (_gate) return (Sum(_seconds, second), Sum(_minutes, second / 60));
        }

        public long IdleSince(long second)
        {
            lock (_gate) return second - _last;
        }

        private static void Bump(Slot[] ring, long stamp, long prompt, long generated, long charged)
        {
            ref var slot = ref ring[(int)(stamp % ring.Length)];
            if (slot.Stamp != stamp) slot = new Slot { Stamp = stamp };
            slot.Requests++;
            slot.Prompt += prompt;
            slot.Generated += generated;
            slot.Charged += charged;
        }

        /// <summary>The slots of the last <c>ring.Length</c> stamps up to <paramref name="now"/>.</summary>
        private static UsageTotals Sum(Slot[] ring, long now)
        {
            long requests = 0, prompt = 0, generated = 0, charged = 0;
            foreach (var s in ring)
            {
                if (s.Requests == 0 || s.Stamp > now || s.Stamp <= now - ring.Length) continue;
                requests += s.Requests;
                prompt += s.Prompt;
                generated += s.Generated;
                charged += s.Charged;
            }
            return new UsageTotals(requests, prompt, generated, charged);
        }
    }

    private struct Slot
    {
        public long Stamp;
        public long Requests;
        public long Prompt;
        public long Generated;
        public long Charged;
    }
}
