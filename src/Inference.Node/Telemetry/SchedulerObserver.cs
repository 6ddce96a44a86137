using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;

namespace Serving.Inference.Node.Telemetry;

/// <summary>Feeds scheduler events into <see cref="NodeMetrics"/> and the log.</summary>
internal sealed class SchedulerObserver(NodeMetrics metrics, ILogger logger) : ISchedulerObserver
{
    /// <summary>Label of a finished request's adapter (set by the adapter manager; bounded cardinality).</summary>
    public Func<string, string>? AdapterLabel { get; set; }

    public void OnRequestStarted(GenerationHandle request, TimeSpan queued)
    {
        metrics.QueueTime(queued);
        NodeTracing.Admitted(request, out var previous);
        NodeLog.RequestStarted(logger, request.Request.Id, request.PromptTokens, request.Request.Choices, (long)queued.TotalMilliseconds);
        NodeTracing.Restore(previous);
    }

    public void OnFirstToken(GenerationHandle request, TimeSpan timeToFirstToken)
    {
        metrics.TimeToFirstToken(timeToFirstToken);
        NodeTracing.FirstToken(request);
        // The first token of each choice is counted in OnOutputToken's absence: count them here.
        for (var i = 0; i < request.Request.Choices; i++) metrics.GeneratedToken();
    }

    public void OnOutputToken(TimeSpan sincePrevious)
    {
        metrics.GeneratedToken();
        metrics.TimePerOutputToken(sincePrevious);
    }

    public void OnPromptTokens(int count) => metrics.PromptTokens(count);

    public void OnRequestFinished(GenerationHandle request, FinishReason reason)
    {
        var r = reason.ToOpenAIString();
        NodeTracing.Finishing(request, out var previous);
        metrics.Finished(r);
        metrics.Phases(request);
        if (request.Request.Adapter is { } adapter && AdapterLabel is { } label)
        {
            metrics.AdapterRequestFinished(label(adapter.Key), request.PromptTokens, request.CompletionTokens);
        }
        var decoding = request.Request.Decoding;
        var exitMode = decoding is Serving.Inference.Decoding.SpeculativeSpec ? "speculative" : request.Request.EarlyExit is not null ? "confident" : null;
        metrics.DecodingFinished(decoding.Method, request.GeneratedTokens, exitMode, request.LayersPerToken, request.DraftAcceptance);
        NodeLog.RequestFinished(logger, request.Request.Id, r, request.CompletionTokens);
        NodeTracing.Finish(request, r, previous);
    }

    public void OnStepFailed(Exception error) => NodeLog.StepFailed(logger, error);

    public void OnAdapterActivated(string key, int slot, string? evicted, TimeSpan copy)
    {
        metrics.AdapterLookup("slot", hit: false);
        metrics.AdapterActivated(copy);
        NodeLog.AdapterActivated(logger, key, slot, evicted, copy.TotalMilliseconds);
    }

    public void OnAdapterSlotHit(string key) => metrics.AdapterLookup("slot", hit: true);

    public void OnStrategyStalled(GenerationHandle request) => NodeLog.StrategyStalled(logger, request.Request.Id ?? "", request.Request.Decoding.Method);
}
