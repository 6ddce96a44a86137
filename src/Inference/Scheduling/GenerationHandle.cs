using System.Diagnostics;
using System.Threading.Channels;
using Serving.Inference.Output;
using Serving.Inference.Sampling;

namespace Serving.Inference.Scheduling;

/// <summary>
/// The caller's side of a submitted request: a stream of <see cref="GenerationEvent"/>s ending in
/// <see cref="GenerationEventKind.Done"/>, usage counters, and <see cref="Cancel"/>. The channel is unbounded but a
/// request produces at most <c>Choices × (MaxTokens + 2)</c> events, so a slow reader cannot grow memory without bound.
/// </summary>
public sealed class GenerationHandle : IGenerationSink
{
    private readonly Channel<GenerationEvent> _events = Channel.CreateUnbounded<GenerationEvent>(
        new UnboundedChannelOptions { SingleReader = true, SingleWriter = true, AllowSynchronousContinuations = false });
    private readonly Action _wake;
    private int _cancelled;
    private int _completionTokens;
    private int _generatedTokens;

    internal GenerationHandle(GenerationRequest request, Action wake, DateTimeOffset submittedAt)
    {
        Request = request;
        _wake = wake;
        SubmittedAt = submittedAt;
        TraceContext = Activity.Current?.Context ?? default;
    }

    /// <summary>
    /// The trace context current where the request was submitted (the caller's span, e.g. the node's HTTP request
    /// span); default when there was none. The host's observer parents the request's phase spans on it.
    /// </summary>
    public ActivityContext TraceContext { get; }

    /// <summary>
    /// The span of the request's current phase (queue wait, prefill, decode), kept by the host's scheduler observer on
    /// the scheduler thread; null when nothing traces. One per phase, never per token.
    /// </summary>
    public Activity? PhaseSpan { get; set; }

    /// <summary>The request as submitted.</summary>
    public GenerationRequest Request { get; }

    /// <summary>Events in order; completes after <see cref="GenerationEventKind.Done"/>.</summary>
    public ChannelReader<GenerationEvent> Events => _events.Reader;

    /// <summary>Prompt tokens (OpenAI usage counts them once, even with n &gt; 1).</summary>
    public int PromptTokens => Request.PromptTokens.Length;

    /// <summary>Tokens generated over all choices so far (stop tokens included, as OpenAI counts them).</summary>
    public int CompletionTokens => Volatile.Read(ref _completionTokens);

    /// <summary>
    /// Tokens the node generated for the request over every row it ran (candidates and beams of an alignment method
    /// included); equals <see cref="CompletionTokens"/> for plain sampling.
    /// </summary>
    public int GeneratedTokens => Volatile.Read(ref _generatedTokens);

    /// <summary>Blocks run per token pass of the request's decode steps (early exit lowers it); null before any decode step.</summary>
    public double? LayersPerToken
    {
        get
        {
            var passes = Volatile.Read(ref _passes);
            return passes == 0 ? null : (double)Volatile.Read(ref _layers) / passes;
        }
    }

    /// <summary>The prompt's logprobs when the request asked for them (<see cref="GenerationRequest.PromptLogprobs"/>); set before the first token event.</summary>
    public IReadOnlyList<Output.PromptTokenLogprob>? PromptLogprobs { get; internal set; }

    /// <summary>Self-speculative decoding: the share of drafted tokens the full model accepted (null otherwise).</summary>
    public double? DraftAcceptance { get; internal set; }

    private long _layers;
    private long _passes;

    /// <summary>Counts <paramref name="layers"/> blocks run over <paramref name="passes"/> token passes.</summary>
    internal void AddLayers(long layers, long passes)
    {
        Interlocked.Add(ref _layers, layers);
        Interlocked.Add(ref _passes, passes);
    }

    /// <summary>When the request was submitted.</summary>
    public DateTimeOffset SubmittedAt { get; }

    /// <summary>When it left the queue and got its KV slots (null until then); the scheduler's clock.</summary>
    public DateTimeOffset? AdmittedAt { get; internal set; }

    /// <summary>When its first token was sampled (null until then, or when none was).</summary>
    public DateTimeOffset? FirstTokenAt { get; internal set; }

    /// <summary>When it ended (null until then).</summary>
    public DateTimeOffset? FinishedAt { get; internal set; }

    /// <summary>Sampler seed of each choice (random ones included), set when the request starts running.</summary>
    public ulong[]? Seeds { get; internal set; }

    /// <summary>True once cancellation was asked for.</summary>
    public bool IsCancellationRequested => Volatile.Read(ref _cancelled) != 0;

    /// <summary>Asks the scheduler to end the request; its KV slots are freed before the next decode step.</summary>
    public void Cancel()
    {
        if (Interlocked.Exchange(ref _cancelled, 1) == 0) _wake();
    }

    internal void AddCompletionTokens(int count) => Interlocked.Add(ref _completionTokens, count);

    internal void AddGeneratedTokens(int count) => Interlocked.Add(ref _generatedTokens, count);

    /// <summary>What the request's alignment method did (null for plain sampling); set before the stream completes.</summary>
    public Decoding.AlignmentReport? Alignment { get; internal set; }

    /// <summary>How choice 0 finished (null until it has), the reason metrics and logs report for the request.</summary>
    public FinishReason? FirstChoiceFinish { get; private set; }

    internal void Write(in GenerationEvent e)
    {
        if (e.Kind == GenerationEventKind.Finished && e.Choice == 0) FirstChoiceFinish ??= e.FinishReason;
        _events.Writer.TryWrite(e);
    }

    void IGenerationSink.Write(in GenerationEvent e) => Write(e);

    internal void Complete() => _events.Writer.TryComplete();
}
