using Serving.Inference.Scheduling;

namespace Serving.Inference.Decoding;

/// <summary>
/// How one request turns logits into its answer (plain sampling, best-of-n, reward-guided search, ...): the strategy
/// owns the request's rows. The scheduler decides when rows run; after each prefill or decode step it hands the strategy
/// every row that got next-token logits, then calls <see cref="OnStepEnd"/>; the strategy samples, emits output, feeds
/// tokens, forks and releases rows through the <see cref="IDecodingContext"/>. All calls come on the scheduler thread.
/// A new strategy is a new <see cref="DecodingSpec"/> and its strategy type: no scheduler code changes.
/// </summary>
public interface IDecodingStrategy
{
    /// <summary>
    /// <paramref name="row"/> has next-token logits: its prompt is now in the cache, or a decode step fed its pending
    /// token. <paramref name="logits"/> [V] is valid only during this call (copy what <see cref="OnStepEnd"/> needs).
    /// By the end of <see cref="OnStepEnd"/> every row handed over must have been fed a token
    /// (<see cref="IDecodingContext.Feed"/>) or released: every live row takes part in the next decode step.
    /// </summary>
    void OnLogits(IDecodingContext context, DecodingRow row, ReadOnlySpan<float> logits);

    /// <summary>Every row of the request that had logits in this iteration has been handed over.</summary>
    void OnStepEnd(IDecodingContext context) { }

    /// <summary>The request ends early (cancelled, deadline, shutdown, a failed step): finish what the client sees with <see cref="Sampling.FinishReason.Abort"/>.</summary>
    void Abort();

    /// <summary>True once the request is complete: the scheduler releases its remaining rows and ends the stream.</summary>
    bool IsDone { get; }

    /// <summary>The seed of every sampler the strategy drew from so far (random ones included), for replays.</summary>
    ulong[] Seeds { get; }
}

/// <summary>What the scheduler offers a strategy for one request's rows.</summary>
public interface IDecodingContext
{
    /// <summary>Longest sequence (prompt + output) a row may reach.</summary>
    int MaxContext { get; }

    /// <summary>
    /// A copy of <paramref name="parent"/> in a new KV row: the same cached tokens (copied, not recomputed), adapter and
    /// reward state. Throws when the request would exceed the rows its spec reserved (<see cref="DecodingSpec.MaxRows"/>).
    /// </summary>
    DecodingRow Fork(DecodingRow parent);

    /// <summary>
    /// A new row for another prompt (e.g. a rewritten instruction), on the request's adapter and reward head; the
    /// scheduler prefills it within its prefill budget and hands it over with <see cref="IDecodingStrategy.OnLogits"/>
    /// when its prompt is in the cache. Counts against <see cref="DecodingSpec.MaxRows"/>.
    /// </summary>
    DecodingRow Start(int[] prompt);

    /// <summary>Feeds <paramref name="token"/> to <paramref name="row"/> in the next decode step.</summary>
    void Feed(DecodingRow row, int token);

    /// <summary>Frees <paramref name="row"/>'s KV row after this iteration; the row gets no more logits.</summary>
    void Release(DecodingRow row);

    /// <summary>Sets <paramref name="row"/>'s early-exit policy from its next decode step on (null: every layer).</summary>
    void SetExit(DecodingRow row, EarlyExit.ExitPolicy? policy);

    /// <summary>The hidden state the row's last decoded token left the step with [d] (packed steps only).</summary>
    void CopyLastHidden(DecodingRow row, Span<float> destination);

    /// <summary>
    /// Runs blocks [<paramref name="fromLayer"/>, L) for the row's last <paramref name="tokens"/> cached tokens from their
    /// hidden states at that layer and returns the full model's logits at each [tokens, V] (self-speculative
    /// verification; valid until the next call). Call from <see cref="IDecodingStrategy.OnStepEnd"/>.
    /// </summary>
    ReadOnlySpan<float> Verify(DecodingRow row, ReadOnlySpan<float> hidden, int fromLayer, int tokens);

    /// <summary>Keeps only the row's first <paramref name="length"/> cached tokens (rejected drafts).</summary>
    void Truncate(DecodingRow row, int length);
}
