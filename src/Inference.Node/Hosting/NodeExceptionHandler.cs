using System.Globalization;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.Extensions.Options;
using Serving.AdapterStore.Storage;
using Serving.Contracts.Errors;
using Serving.Inference.Node.OpenAI;
using Serving.Inference.Node.Telemetry;
using Serving.Inference.Sampling;

namespace Serving.Inference.Node.Hosting;

/// <summary>
/// The node's one mapping from exceptions to responses, all in OpenAI's error shape: a refusal to its row of
/// <see cref="ErrorCodes"/>, a sampling parameter out of range to 400 naming it, an unreachable store to 503
/// <c>store_unavailable</c>; 429 and 503 carry <c>Retry-After</c> (<see cref="NodeOptions.RetryAfter"/>). A client that
/// went away ends quietly. Anything else falls through (500).
/// </summary>
internal sealed class NodeExceptionHandler(IOptions<NodeOptions> options, ILogger<NodeExceptionHandler> logger) : IExceptionHandler
{
    public async ValueTask<bool> TryHandleAsync(HttpContext context, Exception exception, CancellationToken cancellationToken)
    {
        if (exception is OperationCanceledException && context.RequestAborted.IsCancellationRequested)
        {
            NodeLog.ClientDisconnected(logger, context.TraceIdentifier);
            return true;
        }
        var refusal = exception switch
        {
            RequestRefusedException r => r,
            SamplingParameterException e => Refusals.Invalid(e.Param, e.Message),
            StoreUnavailableException e => Refusals.StoreUnavailable(e.Message),
            BadHttpRequestException e => TransportRefusals.From(e.StatusCode, e.Message),
            _ => null,
        };
        if (refusal is null) return false;
        if (refusal.Error.Status < 500) NodeLog.InvalidRequest(logger, context.TraceIdentifier, refusal.Param ?? refusal.Error.Code);
        context.Response.StatusCode = refusal.Error.Status;
        if (refusal.Error.Status is StatusCodes.Status429TooManyRequests or StatusCodes.Status503ServiceUnavailable)
        {
            context.Response.Headers.RetryAfter = Math.Max(1, (int)Math.Ceiling(options.Value.RetryAfter.TotalSeconds)).ToString(CultureInfo.InvariantCulture);
        }
        await context.Response.WriteAsJsonAsync(refusal.Body, cancellationToken).ConfigureAwait(false);
        return true;
    }
}
