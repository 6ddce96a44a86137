using Serving.Gateway.Resilience;
using Yarp.ReverseProxy.Forwarder;

namespace Serving.Gateway.RateLimiting;

/// <summary>
/// What a finished request is charged, from what its response showed, in this order:
/// <list type="number">
/// <item>the node's final <c>usage</c> (a JSON body's, or a stream's usage-only chunk) on a 2xx: exactly prompt +
/// generated (<c>usage</c>);</item>
/// <item>a refusal by the node (its 4xx/5xx), or a forward that never reached a node: nothing (<c>refused</c>);</item>
/// <item>a stream that ended without its final usage (the client left, the node died): the prompt and what was generated
/// by the last chunk that passed, nothing when no token was generated (<c>cancelled</c>); a stream from a node that
/// reports no usage per chunk keeps the reservation once text has passed (<c>unknown</c>);</item>
/// <item>anything else (a non-streamed answer the client did not wait for, a node that failed while answering, a
/// timeout): the usage is unknown and the reservation is kept (<c>unknown</c>).</item>
/// </list>
/// </summary>
internal static class TokenSettlement
{
    /// <summary>Charged the node's usage.</summary>
    public const string Usage = "usage";

    /// <summary>Refunded: the node refused the request or it never reached one.</summary>
    public const string Refused = "refused";

    /// <summary>A stream that stopped early: charged what was generated (nothing before the first token).</summary>
    public const string Cancelled = "cancelled";

    /// <summary>The usage is unknown: the reservation is kept.</summary>
    public const string Unknown = "unknown";

    /// <summary>The charge, the outcome, and the usage it rests on (null when none does).</summary>
    public static (long Charged, string Outcome, UsageReport? Usage) Decide(long reserved, bool stream, HttpContext context, UsageCapture capture)
    {
        int status = context.Response.StatusCode;
        var error = context.GetForwarderErrorFeature();
        if (capture.Final is { } final && status is >= 200 and < 300) return (final.Charge, Usage, final);
        if (error is null && status >= 400) return (0, Refused, null);
        if (error is not null && (error.Error == ForwarderError.NoAvailableDestinations || UpstreamRetryMiddleware.IsConnectFailure(error))) return (0, Refused, null);
        if (stream)
        {
            if (capture.Progress is { } progress)
            {
                return progress.GeneratedTokens > 0 ? (progress.Charge, Cancelled, progress) : (0, Cancelled, null);
            }
            if (!capture.SawChoices) return (0, Cancelled, null);
        }
        return (reserved, Unknown, null);
    }
}
