using System.Numerics.Tensors;
using Serving.Inference.EarlyExit;
using Serving.Inference.Output;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;

namespace Serving.Inference.Decoding;

/// <summary>
/// <c>early_exit: {"mode": "speculative"}</c> (LayerSkip's self-speculative decoding): the row drafts
/// <see cref="DraftTokens"/> tokens with its first <see cref="DraftLayers"/> blocks and the early head (greedy), then one
/// packed pass runs the remaining blocks over all drafted positions from the drafts' kept hidden states (the drafts'
/// K/V of the first blocks are reused). Each position's full-model token is chosen exactly as plain decoding would —
/// argmax, or a draw from the request's own sampler in the same order — and drafts are accepted while they equal it;
/// the first disagreement emits the full model's token and the rest is discarded (the cache truncated). So the output
/// is token for token plain decoding's, greedy or seeded. Streams token by token; needs packed steps.
/// </summary>
public sealed record SpeculativeSpec(int DraftLayers, int DraftTokens = SpeculativeSpec.DefaultDraftTokens) : DecodingSpec
{
    public override string Method => "speculative";

    public const int DefaultDraftTokens = 4;
    public const int MaxDraftTokens = 16;

    public override int MaxRows(GenerationRequest request) => 1;

    public override void Validate(GenerationRequest request, int capacity)
    {
        if (request.Choices != 1) throw new SamplingParameterException("n", "n must be 1 with speculative early exit.");
        if (DraftTokens < 1 || DraftTokens > MaxDraftTokens) throw new SamplingParameterException("early_exit.draft_tokens", $"early_exit.draft_tokens must be between 1 and {MaxDraftTokens}, got {DraftTokens}.");
        if (DraftLayers < 1) throw new SamplingParameterException("early_exit.draft_layers", $"early_exit.draft_layers must be at least 1, got {DraftLayers}.");
        if (request.RewardHead is not null) throw new SamplingParameterException("reward_head", "reward heads are not supported with speculative early exit.");
    }

    public override IDecodingStrategy Create(DecodingSetup setup)
    {
        if (DraftLayers >= setup.Model.Config.NumLayers)
        {
            throw new SamplingParameterException("early_exit.draft_layers", $"early_exit.draft_layers must be below the model's {setup.Model.Config.NumLayers} layers, got {DraftLayers}.");
        }
        if (!setup.Model.SupportsPackedSteps) throw new SamplingParameterException("early_exit", "this node was started without early exit (packed steps); speculative mode is not available.");
        return new SelfSpeculativeStrategy(setup, this);
    }
}

/// <summary>The strategy of <see cref="SpeculativeSpec"/>.</summary>
internal sealed class SelfSpeculativeStrategy : IDecodingStrategy
{
    private readonly SpeculativeSpec _spec;
    private readonly GenerationHandle _handle;
    private readonly TokenSampler _sampler;
    private readonly RowOutput _output;
    private readonly bool _logprobs;
    private readonly int _layers;
    private readonly int _d;
    private readonly ExitPolicy _draft;
    private readonly float[] _hidden;   // [draft tokens, d]: the drafts' hidden states at the draft depth
    private readonly int[] _drafts;     // drafts[0] = the pending token, drafts[i + 1] = the draft after it
    private DecodingRow? _row;
    private int _drafted;
    private long _proposed;
    private long _accepted;

    public SelfSpeculativeStrategy(DecodingSetup setup, SpeculativeSpec spec)
    {
        _spec = spec;
        _handle = setup.Handle;
        _sampler = new TokenSampler(setup.Request.Sampling, setup.VocabSize, setup.Request.PromptTokens);
        _output = setup.CreateOutput(0, setup.Request.Sampling);
        _logprobs = setup.Request.Logprobs;
        _layers = setup.Model.Config.NumLayers;
        _d = setup.Model.Config.HiddenSize;
        _draft = new ExitPolicy(new FixedDepthCriterion(spec.DraftLayers), 0.5f, Propagate: false);
        _hidden = new float[spec.DraftTokens * _d];
        _drafts = new int[spec.DraftTokens + 1];
        Seeds = [_sampler.Seed];
    }

    public bool IsDone => _output.Finished;

    public ulong[] Seeds { get; }

    public void OnLogits(IDecodingContext context, DecodingRow row, ReadOnlySpan<float> logits)
    {
        if (_row is null)
        {
            // The prompt's logits are the full model's: the first token as plain decoding chooses it, then drafting starts.
            _row = row;
            if (Emit(context, row, logits, row.Length, out _)) return;
            context.SetExit(row, _draft);
            return;
        }
        // A draft step: keep the hidden state for verification; the early head's argmax is the next draft.
        context.CopyLastHidden(row, _hidden.AsSpan(_drafted * _d, _d));
        _drafts[++_drafted] = TensorPrimitives.IndexOfMax(logits);
        _handle.AddGeneratedTokens(1);
        if (_drafted < _spec.DraftTokens && row.Length + 1 < context.MaxContext) context.Feed(row, _drafts[_drafted]);
    }

    public void OnStepEnd(IDecodingContext context)
    {
        if (_row is not { } row || _output.Finished) return;
        if (_drafted == 0 || (_drafted < _spec.DraftTokens && row.Length + 1 < context.MaxContext)) return;

        // Verify the drafted positions with the remaining blocks, then accept while the drafts agree.
        var n = _drafted;
        var start = row.Length - n;
        var full = context.Verify(row, _hidden.AsSpan(0, n * _d), _spec.DraftLayers, n);
        _handle.AddLayers((long)n * (_layers - _spec.DraftLayers), 0);
        var vocab = full.Length / n;
        var emitted = 0;
        for (var i = 0; i < n; i++)
        {
            _proposed++;
            var finished = Emit(context, row, full.Slice(i * vocab, vocab), start + i + 1, out var token);
            emitted++;
            if (finished) break;
            if (token != _drafts[i + 1]) break;
            _accepted++;
        }
        _handle.DraftAcceptance = _proposed == 0 ? null : (double)_accepted / _proposed;
        if (_output.Finished) return;
        // Positions start .. start + emitted − 1 hold the pending token and the accepted drafts; the rest is discarded.
        context.Truncate(row, start + emitted);
        _drafted = 0;
        context.Feed(row, _drafts[0]);
    }

    /// <summary>
    /// Chooses the full model's token from <paramref name="logits"/> as plain decoding would and appends it
    /// (<paramref name="position"/>: where it would be cached); true when that ends the answer.
    /// </summary>
    private bool Emit(IDecodingContext context, DecodingRow row, ReadOnlySpan<float> logits, int position, out int token)
    {
        float logprob = 0f;
        token = _logprobs ? _sampler.Sample(logits, out logprob) : _sampler.Sample(logits);
        _sampler.Accept(token);
        _handle.AddCompletionTokens(1);
        _handle.AddGeneratedTokens(1);
        _drafts[0] = token;
        if (_output.Append(token, logprob, _sampler, contextFull: position >= context.MaxContext) is FinishReason reason)
        {
            _output.Finish(reason);
            context.Release(row);
            return true;
        }
        context.Feed(row, token);
        return false;
    }

    public void Abort()
    {
        if (!_output.Finished) _output.Finish(FinishReason.Abort);
    }
}
