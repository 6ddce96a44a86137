using System.Collections.Concurrent;
using Microsoft.Extensions.Options;

namespace Serving.Gateway.RateLimiting;

/// <summary>
/// What a request may cost, reserved at admission: the prompt estimated from the body (bytes / 4, rounded up) plus
/// <c>max_tokens</c> for each of the <c>n</c> choices, clamped to the model's context: the prompt to at most
/// <c>max_model_len − 1</c>, each choice to what the context leaves after it, so one sequence never reserves more than
/// <c>max_model_len</c>. Prompt tokens count once, however many choices.
/// </summary>
/// <param name="Prompt">The prompt's share.</param>
/// <param name="PerChoice">Each choice's completion share.</param>
/// <param name="Choices">n (for completions, the larger of n and best_of).</param>
public readonly record struct TokenCost(long Prompt, long PerChoice, int Choices)
{
    /// <summary>The reservation.</summary>
    public long Tokens => Prompt + PerChoice * Choices;

    /// <summary>The cost of a request of <paramref name="bodyBytes"/> bytes (see the type).</summary>
    /// <param name="bodyBytes">Size of the request body.</param>
    /// <param name="maxTokens">Completion tokens per choice the request allows (the default when it sets none); below 0 counts as 0.</param>
    /// <param name="choices">Choices generated (at least 1).</param>
    /// <param name="maxModelLen">The model's context (<c>max_model_len</c> from the registry); 0 when unknown: no clamp.</param>
    public static TokenCost Of(long bodyBytes, int maxTokens, int choices, int maxModelLen)
    {
        long prompt = (Math.Max(0, bodyBytes) + 3) / 4;
        long perChoice = Math.Max(0, maxTokens);
        if (maxModelLen > 0)
        {
            prompt = Math.Min(prompt, maxModelLen - 1);
            perChoice = Math.Min(perChoice, maxModelLen - prompt);
        }
        return new TokenCost(prompt, perChoice, Math.Max(1, choices));
    }
}

/// <summary>A token reservation held by a request in flight; settled exactly once.</summary>
/// <param name="Tenant">The tenant charged.</param>
/// <param name="Tokens">Tokens reserved.</param>
public sealed record TokenReservation(string Tenant, long Tokens);

/// <summary>Outcome of <see cref="TokenBudget.TryReserve"/>.</summary>
public enum Admission
{
    /// <summary>Reserved.</summary>
    Admitted,

    /// <summary>The budget holds too little now; it will after <c>RetryAfter</c>.</summary>
    Wait,

    /// <summary>The reservation exceeds the tenant's whole budget: waiting can never admit it.</summary>
    NeverFits,
}

/// <summary>
/// Tokens per minute per tenant, reserve → settle → refund: a request reserves its <see cref="TokenCost"/> at admission
/// (refused with a wait when the bucket holds too little, and outright when the cost exceeds the whole budget), and is
/// settled when its response ends: charged exactly its usage (prompt once + every generated token, alignment candidates
/// included), refunded in full when the node refused it or the client left before the first token, and for a cancelled
/// stream charged what was generated before it stopped. Buckets read the clock registered under <see cref="ClockKey"/>
/// (the host's <see cref="TimeProvider"/> unless replaced, as tests do to control refill).
/// </summary>
public sealed class TokenBudget(IOptionsMonitor<RateLimitOptions> options, [FromKeyedServices(TokenBudget.ClockKey)] TimeProvider time)
{
    /// <summary>Service key of the clock the buckets refill by.</summary>
    public const string ClockKey = "Serving.Gateway.TokenBudget";

    private readonly ConcurrentDictionary<string, TokenBucket> _buckets = new(StringComparer.Ordinal);

    /// <summary>Raised after every settlement (tenant, reserved, charged): tests wait on it instead of the clock.</summary>
    internal event Action<string, long, long>? Settled;

    /// <summary>The tenant's tokens per minute.</summary>
    public int LimitOf(string tenant) => options.CurrentValue.TokensFor(tenant);

    /// <summary>Reserves <paramref name="tokens"/> for a request of <paramref name="tenant"/>.</summary>
    public (Admission Outcome, TokenReservation? Reservation, TimeSpan RetryAfter) TryReserve(string tenant, long tokens)
    {
        int limit = LimitOf(tenant);
        if (tokens > limit) return (Admission.NeverFits, null, TimeSpan.Zero);
        if (!Bucket(tenant).TryTake(tokens, limit, out var retryAfter)) return (Admission.Wait, null, retryAfter);
        return (Admission.Admitted, new TokenReservation(tenant, tokens), TimeSpan.Zero);
    }

    /// <summary>
    /// Settles <paramref name="reservation"/> at <paramref name="charged"/> tokens (0 refunds it in full): the difference
    /// goes back to the bucket, or an excess is taken from it, into debt when it must.
    /// </summary>
    public void Settle(TokenReservation reservation, long charged)
    {
        Bucket(reservation.Tenant).Settle(reservation.Tokens, Math.Max(0, charged), LimitOf(reservation.Tenant));
        Settled?.Invoke(reservation.Tenant, reservation.Tokens, Math.Max(0, charged));
    }

    /// <summary>Whole tokens the tenant may spend now (negative while in debt).</summary>
    public long Available(string tenant) => Read(tenant).Available;

    /// <summary>Tokens available now, tokens held by the tenant's requests in flight, and its limit.</summary>
    public (long Available, long Reserved, int Limit) Read(string tenant)
    {
        int limit = LimitOf(tenant);
        var (available, reserved) = Bucket(tenant).Read(limit);
        return (available, reserved, limit);
    }

    private TokenBucket Bucket(string tenant) => _buckets.GetOrAdd(tenant, t => new TokenBucket(time, LimitOf(t)));
}
