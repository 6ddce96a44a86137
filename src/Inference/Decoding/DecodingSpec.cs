using Serving.Inference.Output;
using Serving.Inference.Scheduling;
using Serving.Inference.Tokenization;

namespace Serving.Inference.Decoding;

/// <summary>
/// A request's decoding method, as the API maps it (plain sampling, <c>alignment: {method: ...}</c>): checks itself
/// against the node and creates the request's <see cref="IDecodingStrategy"/>.
/// </summary>
public abstract record DecodingSpec
{
    /// <summary>The method's name as the API and the metrics spell it (<c>sampling</c>, <c>best_of_n</c>, <c>args</c>, <c>darwin</c>, <c>speculative</c>, <c>score</c>).</summary>
    public abstract string Method { get; }

    /// <summary>KV rows the strategy may hold at once; the scheduler reserves them when it admits the request.</summary>
    public abstract int MaxRows(GenerationRequest request);

    /// <summary>
    /// Throws <see cref="Sampling.SamplingParameterException"/> naming the request field when the method cannot run on
    /// this node (e.g. more rows than it has KV slots).
    /// </summary>
    public virtual void Validate(GenerationRequest request, int capacity) { }

    /// <summary>Creates the strategy (called on the submitting thread, so the scheduler loop does not allocate it).</summary>
    public abstract IDecodingStrategy Create(DecodingSetup setup);
}

/// <summary>What a strategy is built from.</summary>
public sealed record DecodingSetup
{
    public required GenerationRequest Request { get; init; }

    /// <summary>The request's stream and usage counters.</summary>
    public required GenerationHandle Handle { get; init; }

    public required ITokenizer Tokenizer { get; init; }

    /// <summary>The model's end-of-sequence ids (empty when it has none).</summary>
    public required int[] EosIds { get; init; }

    public required int VocabSize { get; init; }

    public required TextInterner Interner { get; init; }

    public required ISchedulerObserver Observer { get; init; }

    /// <summary>The model the request runs on (strategies that score candidates themselves read its embedding).</summary>
    public required Engine.DecoderModel Model { get; init; }

    /// <summary>A row's output for choice <paramref name="choice"/>, streaming to the request's handle.</summary>
    public RowOutput CreateOutput(int choice, Sampling.SamplingParameters sampling) =>
        new(choice, Request, sampling, Tokenizer, EosIds) { Sink = Handle, Interner = Interner, Observer = Observer };

    /// <summary>An answer for choice <paramref name="choice"/>: its own sampler (prompt tokens seen for penalties) and output.</summary>
    internal ChoiceRun CreateChoice(int choice, Sampling.SamplingParameters sampling) =>
        new(new Sampling.TokenSampler(sampling, VocabSize, Request.PromptTokens), CreateOutput(choice, sampling), Handle,
            scored: Request.RewardHead is not null, tokenRewards: Request.ReturnTokenRewards);
}
