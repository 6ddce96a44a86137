using System.Diagnostics;
using Serving.Inference.Scheduling;

namespace Serving.Inference.Node.Telemetry;

/// <summary>
/// The node's one <see cref="ActivitySource"/> (<see cref="SourceName"/>): a span per phase of a generation request,
/// children of the span that submitted it (the node's HTTP server span, itself a child of the gateway's forward):
/// <see cref="QueueWait"/> (submitted → admitted), <see cref="Prefill"/> (admitted → first token), <see cref="Decode"/>
/// (first token → finished). Made on the scheduler thread at the phase changes the scheduler reports, from its
/// <see cref="TimeProvider"/> timestamps: three spans per request, nothing per token.
/// </summary>
internal static class NodeTracing
{
    /// <summary>Name of the node's activity source (the same as its meter's).</summary>
    public const string SourceName = NodeMetrics.MeterName;

    /// <summary>Default <c>service.name</c> of the node's traces and metrics (<c>Telemetry:ServiceName</c> overrides it).</summary>
    public const string ServiceName = "serving-node";

    /// <summary>Span: from submission to admission into the batch (vLLM's queue time).</summary>
    public const string QueueWait = "serving.node.queue_wait";

    /// <summary>Span: from admission to the first sampled token (the prompt's prefill).</summary>
    public const string Prefill = "serving.node.prefill";

    /// <summary>Span: from the first token to the end of the request (every decode step it took part in).</summary>
    public const string Decode = "serving.node.decode";

    private static readonly ActivitySource Source = new(SourceName);

    /// <summary>
    /// The request was admitted (<see cref="GenerationHandle.AdmittedAt"/>): records its queue-wait span and opens its
    /// prefill span, current on this thread until <see cref="Restore"/> so that log records written meanwhile carry the
    /// request's trace.
    /// </summary>
    public static void Admitted(GenerationHandle request, out Activity? previous)
    {
        previous = Activity.Current;
        if (!Source.HasListeners() || request.AdmittedAt is not { } admitted) return;
        using (var wait = Source.StartActivity(QueueWait, ActivityKind.Internal, request.TraceContext, startTime: request.SubmittedAt))
        {
            wait?.SetTag("serving.request_id", request.Request.Id);
            wait?.SetEndTime(admitted.UtcDateTime);
        }
        var prefill = Source.StartActivity(Prefill, ActivityKind.Internal, request.TraceContext, startTime: admitted);
        prefill?.SetTag("serving.request_id", request.Request.Id);
        prefill?.SetTag("serving.prompt_tokens", request.PromptTokens);
        request.PhaseSpan = prefill;
    }

    /// <summary>The first token came (<see cref="GenerationHandle.FirstTokenAt"/>): prefill ends, decode begins.</summary>
    public static void FirstToken(GenerationHandle request)
    {
        if (request.PhaseSpan is not { } prefill || request.FirstTokenAt is not { } first) return;
        var previous = Activity.Current;
        prefill.SetEndTime(first.UtcDateTime);
        prefill.Stop();
        var decode = Source.StartActivity(Decode, ActivityKind.Internal, request.TraceContext, startTime: first);
        decode?.SetTag("serving.request_id", request.Request.Id);
        request.PhaseSpan = decode;
        Activity.Current = previous;
    }

    /// <summary>
    /// The request ended: its open phase span (decode, or prefill when no token came) becomes current on this thread for
    /// the caller's last log record; <see cref="Finish"/> closes it.
    /// </summary>
    public static void Finishing(GenerationHandle request, out Activity? previous)
    {
        previous = Activity.Current;
        if (request.PhaseSpan is { } span) Activity.Current = span;
    }

    /// <summary>Closes the request's open phase span at <see cref="GenerationHandle.FinishedAt"/> and restores <paramref name="previous"/>.</summary>
    public static void Finish(GenerationHandle request, string finishReason, Activity? previous)
    {
        if (request.PhaseSpan is { } span)
        {
            span.SetTag("serving.finish_reason", finishReason);
            span.SetTag("serving.completion_tokens", request.CompletionTokens);
            if (finishReason == "abort") span.SetStatus(ActivityStatusCode.Error, "aborted");
            if (request.FinishedAt is { } end) span.SetEndTime(end.UtcDateTime);
            span.Stop();
            request.PhaseSpan = null;
        }
        Restore(previous);
    }

    /// <summary>Makes <paramref name="previous"/> current again on this thread.</summary>
    public static void Restore(Activity? previous) => Activity.Current = previous;
}
