using Microsoft.AspNetCore.Diagnostics;
using Microsoft.Extensions.Options;
using Serving.AdapterStore.Storage;
using Serving.Contracts.Errors;
using Serving.Gateway.Telemetry;

namespace Serving.Gateway.Api;

/// <summary>
/// The gateway's one mapping from exceptions to responses: a refusal to its row of <see cref="ErrorCodes"/>, an
/// unreachable store to 503 <c>store_unavailable</c> with <c>Retry-After</c> (nothing was changed), a damaged stored
/// adapter to 500 <c>store_corrupt</c>, a client that went away to a quiet end. Everything else falls through (500).
/// </summary>
internal sealed partial class GatewayExceptionHandler(IOptions<GatewayOptions> options, ILogger<GatewayExceptionHandler> logger) : IExceptionHandler
{
    public async ValueTask<bool> TryHandleAsync(HttpContext context, Exception exception, CancellationToken cancellationToken)
    {
        switch (exception)
        {
            case OperationCanceledException when context.RequestAborted.IsCancellationRequested:
                LogClientGone(logger, context.Request.Path);
                return true;
            case RequestRefusedException e:
                await OpenAiErrors.WriteAsync(context, e.Error, e.Message, e.Param, RetryAfterFor(e.Error));
                return true;
            case StoreUnavailableException:
                await OpenAiErrors.WriteAsync(context, ErrorCodes.StoreUnavailable, "The store (Redis) is unreachable; nothing was changed. Retry shortly.",
                    retryAfter: options.Value.RetryAfter);
                return true;
            case StoreCorruptException e:
                await OpenAiErrors.WriteAsync(context, ErrorCodes.StoreCorrupt, e.Message);
                return true;
            case BadHttpRequestException e:
                var refusal = TransportRefusals.From(e.StatusCode, e.Message);
                await OpenAiErrors.WriteAsync(context, refusal.Error, refusal.Message, refusal.Param);
                return true;
            default:
                return false;
        }
    }

    private TimeSpan? RetryAfterFor(ErrorCode error) => error.Status is 429 or 503 ? options.Value.RetryAfter : null;

    [LoggerMessage(EventId = EventIds.ClientGone, Level = LogLevel.Information, Message = "Client disconnected during {Path}")]
    private static partial void LogClientGone(ILogger logger, string path);
}
