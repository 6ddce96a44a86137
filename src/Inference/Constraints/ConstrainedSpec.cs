using Serving.Inference.Decoding;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;

namespace Serving.Inference.Constraints;

/// <summary>
/// Constrained decoding as one more decoding method: <see cref="Inner"/> (plain sampling with <c>n</c>, best-of-n,
/// ARGS) decodes as usual, but every row's logits reach it with the tokens <see cref="Grammar"/> does not allow in the
/// row's state set to -inf, so greedy, sampling (penalties, <c>logit_bias</c>, temperature, top-k/p) and reward-guided
/// choices all pick allowed tokens. Each row carries its automaton state; a forked row copies it. Methods that score
/// tokens the mask never saw (self-speculative drafts) or decode other prompts (DARWIN's rewrites) are refused.
/// </summary>
public sealed record ConstrainedSpec(DecodingSpec Inner, Grammar Grammar) : DecodingSpec
{
    /// <summary>Wraps <paramref name="inner"/> (the request's method so far) with <paramref name="grammar"/>.</summary>
    public static ConstrainedSpec Wrap(DecodingSpec inner, Grammar grammar) =>
        inner is ConstrainedSpec c ? throw new SamplingParameterException("response_format", "Only one output constraint may be given per request.") : new(inner, grammar);

    public override string Method => Inner.Method;

    public override int MaxRows(GenerationRequest request) => Inner.MaxRows(request);

    public override void Validate(GenerationRequest request, int capacity)
    {
        if (Inner is SpeculativeSpec or DarwinSpec or ScoreOnlySpec)
        {
            throw new SamplingParameterException("response_format", $"Structured output cannot be combined with the {Inner.Method} decoding method.");
        }
        if (request.Sampling.IgnoreEos) throw new SamplingParameterException("ignore_eos", "ignore_eos cannot be combined with structured output: the output ends where the grammar does.");
        Inner.Validate(request, capacity);
    }

    public override IDecodingStrategy Create(DecodingSetup setup)
    {
        if (setup.EosIds.Length == 0) throw new SamplingParameterException("response_format", "Structured output needs the model's end-of-sequence token, and this model has none.");
        var vocabulary = TokenVocabulary.For(setup.Tokenizer, setup.VocabSize, setup.EosIds);
        return new ConstrainedStrategy(Inner.Create(setup), Grammar.MasksFor(vocabulary), setup.VocabSize, setup.Request.Sampling.MaxTokens);
    }
}

/// <summary>The strategy of <see cref="ConstrainedSpec"/>: masks each row's logits, then hands them to the inner strategy.</summary>
internal sealed class ConstrainedStrategy : IDecodingStrategy
{
    /// <summary>
    /// The masked logits, one buffer per thread shared by every constrained request the thread decodes: the inner
    /// strategy gets them as a span that cannot outlive its <c>OnLogits</c> call, so one hot buffer serves a whole batch
    /// (rather than one per request, which at batch 32 is half a megabyte of buffers passing through the cache each step).
    /// </summary>
    [ThreadStatic]
    private static float[]? t_masked;

    private readonly IDecodingStrategy _inner;
    private readonly GrammarMasks _masks;
    private readonly int _vocabSize;
    private readonly int _maxTokens;
    private readonly Dictionary<DecodingRow, RowState> _rows = [];
    private readonly MaskingContext _context;

    public ConstrainedStrategy(IDecodingStrategy inner, GrammarMasks masks, int vocabSize, int maxTokens)
    {
        _inner = inner;
        _masks = masks;
        _vocabSize = vocabSize;
        _maxTokens = maxTokens;
        _context = new MaskingContext(this);
    }

    public bool IsDone => _inner.IsDone;

    public ulong[] Seeds => _inner.Seeds;

    public void OnLogits(IDecodingContext context, DecodingRow row, ReadOnlySpan<float> logits)
    {
        if (!_rows.TryGetValue(row, out var state))
        {
            state = new RowState(_masks.Start, 0);
            _rows[row] = state;
        }
        var budget = Math.Min(_maxTokens - state.Tokens, context.MaxContext - row.Length + 1);
        var buffer = t_masked;
        if (buffer is null || buffer.Length < _vocabSize) t_masked = buffer = new float[_vocabSize];
        var masked = buffer.AsSpan(0, _vocabSize);
        _masks.Apply(state.State, Math.Max(budget, 1), logits, masked);
        _context.Inner = context;
        _inner.OnLogits(_context, row, masked);
    }

    public void OnStepEnd(IDecodingContext context)
    {
        _context.Inner = context;
        _inner.OnStepEnd(_context);
    }

    public void Abort() => _inner.Abort();

    private readonly record struct RowState(int State, int Tokens);

    /// <summary>The scheduler's context seen through the constraint: feeding advances a row's state, forking copies it.</summary>
    private sealed class MaskingContext(ConstrainedStrategy owner) : IDecodingContext
    {
        public IDecodingContext Inner { get; set; } = null!;

        public int MaxContext => Inner.MaxContext;

        public DecodingRow Fork(DecodingRow parent)
        {
            var child = Inner.Fork(parent);
            if (owner._rows.TryGetValue(parent, out var state)) owner._rows[child] = state;
            return child;
        }

        public DecodingRow Start(int[] prompt) => Inner.Start(prompt);

        public void Feed(DecodingRow row, int token)
        {
            if (owner._rows.TryGetValue(row, out var state))
            {
                owner._rows[row] = new RowState(owner._masks.Advance(state.State, token), state.Tokens + 1);
            }
            Inner.Feed(row, token);
        }

        public void Release(DecodingRow row)
        {
            owner._rows.Remove(row);
            Inner.Release(row);
        }

        public void SetExit(DecodingRow row, EarlyExit.ExitPolicy? policy) => Inner.SetExit(row, policy);

        public void CopyLastHidden(DecodingRow row, Span<float> destination) => Inner.CopyLastHidden(row, destination);

        public ReadOnlySpan<float> Verify(DecodingRow row, ReadOnlySpan<float> hidden, int fromLayer, int tokens) =>
            throw new InvalidOperationException("Constrained decoding does not verify drafts.");

        public void Truncate(DecodingRow row, int length) => throw new InvalidOperationException("Constrained decoding does not truncate rows.");
    }
}
