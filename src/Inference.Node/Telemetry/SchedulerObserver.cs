using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;

namespace Serving.Inference.Node.Telemetry;

/// <summary>Feeds scheduler events into <see cref="NodeMetrics"/> and the log.</summary>
internal sealed class SchedulerObserver(NodeMetrics metrics, ILogger logger) : ISchedulerObserver
{
    public void OnRequestStarted(GenerationHandle request, TimeSpan queued)
    {
        metrics.QueueTime(queued);
        NodeLog.RequestStarted(logger, request.Request.Id, request.PromptTokens, request.Request.Choices, (long)queued.TotalMilliseconds);
    }

    public void OnFirstToken(GenerationHandle request, TimeSpan timeToFirstToken)
    {
        metrics.TimeToFirstToken(timeToFirstToken);
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
        metrics.Finished(r);
        NodeLog.RequestFinished(logger, request.Request.Id, r, request.CompletionTokens);
    }

    public void OnStepFailed(Exception error) => NodeLog.StepFailed(logger, error);
}
