using Serving.Inference.Decoding;
using Serving.Inference.Sampling;

namespace Serving.Inference.Scheduling;

/// <summary>
/// One generation job for the <see cref="GenerationScheduler"/>: an already tokenised prompt, validated sampling
/// parameters and <see cref="Choices"/> sequences that share the prompt (forked after its prefill).
/// </summary>
public sealed record GenerationRequest
{
    /// <summary>Prompt token ids (at least one).</summary>
    public required int[] PromptTokens { get; init; }

    /// <summary>Sampling settings (validated on submit). With a <see cref="SamplingParameters.Seed"/>, choice i uses seed + i.</summary>
    public required SamplingParameters Sampling { get; init; }

    /// <summary>Number of choices (OpenAI's <c>n</c>); each owns a KV slot and its own sampler.</summary>
    public int Choices { get; init; } = 1;

    /// <summary>
    /// How the request decodes (default: plain sampling with <see cref="Choices"/> choices); an alignment method maps to
    /// its own spec. Checked on submit.
    /// </summary>
    public DecodingSpec Decoding { get; init; } = SamplingSpec.Instance;

    /// <summary>
    /// The reward head that scores every row of the request in the decode step (null: none). Rows report the head's
    /// reward with each choice's finish (and per token with <see cref="ReturnTokenRewards"/>); alignment methods steer by it.
    /// </summary>
    public Rewards.RewardHead? RewardHead { get; init; }

    /// <summary>
    /// Early exit for every row of the request (null: every token runs every layer): rows leave a decode step after the
    /// block where the policy's confidence reaches its threshold. Needs a model loaded with packed steps.
    /// </summary>
    public EarlyExit.ExitPolicy? EarlyExit { get; init; }

    /// <summary>Report the sequence reward after every token (needs <see cref="RewardHead"/>).</summary>
    public bool ReturnTokenRewards { get; init; }

    /// <summary>
    /// Score the prompt (OpenAI's <c>echo</c> with <c>logprobs</c>): each prompt token's logprob given the tokens before
    /// it, with this many top alternatives (0–20); published on <see cref="GenerationHandle.PromptLogprobs"/> once the
    /// prompt is in the cache. Null: not scored.
    /// </summary>
    public int? PromptLogprobs { get; init; }

    /// <summary>Return per-token logprobs (with <see cref="SamplingParameters.TopLogprobs"/> alternatives).</summary>
    public bool Logprobs { get; init; }

    /// <summary>Skip special tokens when detokenising the output.</summary>
    public bool SkipSpecialTokens { get; init; } = true;

    /// <summary>
    /// The adapter every choice of this request runs with (null: the base model). The scheduler puts it into a device
    /// slot before admitting the request (hot swap, no rebuild) and keeps it there while any row uses it.
    /// </summary>
    public AdapterRef? Adapter { get; init; }

    /// <summary>
    /// The tenant the request is served for (per-tenant fairness: waiting requests are admitted least-served tenant
    /// first). Null: one shared anonymous tenant.
    /// </summary>
    public string? Tenant { get; init; }

    /// <summary>Absolute deadline; when it passes, waiting or running, the request ends with <see cref="FinishReason.Abort"/>.</summary>
    public DateTimeOffset? Deadline { get; init; }

    /// <summary>Caller-chosen id for logs and traces (the node: the request's <c>X-Request-Id</c>, so the scheduler's records of it carry the id its client and the gateway see).</summary>
    public string? Id { get; init; }
}

/// <summary>
/// An adapter as the scheduler sees it: <paramref name="Key"/> names one immutable content (e.g. <c>tenant/name@version</c>
/// or a merge's canonical description): two refs with the same key must hold the same factors.
/// </summary>
public sealed record AdapterRef(string Key, Adapters.AdapterFactors Factors);

/// <summary>What <see cref="GenerationScheduler.Submit"/> decided.</summary>
public enum SubmitStatus
{
    /// <summary>Queued or running; events will follow until <see cref="GenerationEventKind.Done"/>.</summary>
    Accepted,

    /// <summary>The waiting queue is full (HTTP 429 with Retry-After).</summary>
    QueueFull,

    /// <summary>The scheduler is draining or stopped (HTTP 503 with Retry-After).</summary>
    Unavailable,
}

/// <summary>Kinds of <see cref="GenerationEvent"/>.</summary>
public enum GenerationEventKind
{
    /// <summary>Text (possibly empty when only logprobs are reported) and, when requested, the token's logprobs.</summary>
    Token,

    /// <summary>A choice finished; <see cref="GenerationEvent.FinishReason"/> says why.</summary>
    Finished,

    /// <summary>Every choice finished; usage is final. Always the last event.</summary>
    Done,
}

/// <summary>One alternative of a token's top logprobs.</summary>
public readonly record struct TopLogprob(int TokenId, float Logprob);

/// <summary>
/// A streamed event of one request. <see cref="TokenId"/> is -1 for text that is not one token's (held-back text
/// flushed at the end). <see cref="TopLogprobs"/> is allocated only when logprobs were requested. <see cref="Reward"/>
/// is the sequence reward after this token (token events) or after the whole choice (finish events) when a reward
/// head scored the request, else null.
/// </summary>
public readonly record struct GenerationEvent(
    GenerationEventKind Kind,
    int Choice,
    string? Text,
    int TokenId,
    float Logprob,
    TopLogprob[]? TopLogprobs,
    FinishReason? FinishReason,
    float? Reward = null);
