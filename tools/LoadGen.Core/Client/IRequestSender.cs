using Serving.LoadGen.Metrics;
using Serving.LoadGen.Workload;

namespace Serving.LoadGen.Client;

/// <summary>Sends one request and reports what happened; <see cref="OpenAiLoadClient"/> is the HTTP implementation.</summary>
public interface IRequestSender
{
    /// <summary>Sends <paramref name="request"/>; timestamps are seconds since <paramref name="originTimestamp"/> (a <see cref="TimeProvider"/> timestamp). Failures are records, not exceptions.</summary>
    Task<RequestRecord> SendAsync(TraceRequest request, long originTimestamp, CancellationToken cancellationToken);
}
