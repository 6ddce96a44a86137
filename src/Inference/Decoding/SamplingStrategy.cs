using Serving.Inference.Output;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;

namespace Serving.Inference.Decoding;

/// <summary>
/// Plain sampling with <see cref="GenerationRequest.Choices"/> choices (OpenAI's <c>n</c>): the prompt is prefilled
/// once and forked; choice i samples with seed + i, so it equals a one-choice request with that seed.
/// </summary>
public sealed record SamplingSpec : DecodingSpec
{
    /// <summary>The default: what every request without an alignment method uses.</summary>
    public static readonly SamplingSpec Instance = new();

    public override int MaxRows(GenerationRequest request) => request.Choices;

    public override void Validate(GenerationRequest request, int capacity)
    {
        if (request.Choices < 1 || request.Choices > capacity)
        {
            throw new SamplingParameterException("n", $"n must be between 1 and {capacity} on this node, got {request.Choices}.");
        }
    }

    public override IDecodingStrategy Create(DecodingSetup setup) => new SamplingStrategy(setup);
}

/// <summary>The strategy of <see cref="SamplingSpec"/>: every choice streams token by token as it is sampled.</summary>
internal sealed class SamplingStrategy : IDecodingStrategy
{
    private readonly GenerationHandle _handle;
    private readonly TokenSampler[] _samplers;
    private readonly RowOutput[] _outputs;
    private readonly bool _logprobs;
    private bool _started;
    private int _unfinished;

    public SamplingStrategy(DecodingSetup setup)
    {
        var request = setup.Request;
        _handle = setup.Handle;
        _logprobs = request.Logprobs;
        _samplers = new TokenSampler[request.Choices];
        _outputs = new RowOutput[request.Choices];
        for (var c = 0; c < _samplers.Length; c++)
        {
            var p = ChoiceParameters(request.Sampling, c);
            _samplers[c] = new TokenSampler(p, setup.VocabSize, request.PromptTokens);
            _outputs[c] = setup.CreateOutput(c, p);
        }
        _unfinished = _samplers.Length;
        Seeds = Array.ConvertAll(_samplers, s => s.Seed);
    }

    public bool IsDone => _unfinished == 0;

    public ulong[] Seeds { get; }

    /// <summary>Choice <paramref name="c"/>'s parameters: with a seed, choice c uses seed + c.</summary>
    internal static SamplingParameters ChoiceParameters(SamplingParameters p, int c) =>
        c > 0 && p.Seed is ulong seed ? p with { Seed = unchecked(seed + (ulong)c) } : p;

    public void OnLogits(IDecodingContext context, DecodingRow row, ReadOnlySpan<float> logits)
    {
        if (!_started)
        {
            // The prompt is in the cache: one row per further choice shares it, and every choice samples from its logits.
            _started = true;
            row.Tag = 0;
            Span<DecodingRow> rows = new DecodingRow[_samplers.Length];
            rows[0] = row;
            for (var c = 1; c < rows.Length; c++)
            {
                rows[c] = context.Fork(row);
                rows[c].Tag = c;
            }
            foreach (var r in rows) Step(context, r, logits);
            return;
        }
        Step(context, row, logits);
    }

    private void Step(IDecodingContext context, DecodingRow row, ReadOnlySpan<float> logits)
    {
        var c = row.Tag;
        var sampler = _samplers[c];
        float logprob = 0f;
        var token = _logprobs ? sampler.Sample(logits, out logprob) : sampler.Sample(logits);
        sampler.Accept(token);
        _handle.AddCompletionTokens(1);
        _handle.AddGeneratedTokens(1);
        if (_outputs[c].Append(token, logprob, sampler, contextFull: row.Length >= context.MaxContext) is FinishReason reason)
        {
            _outputs[c].Finish(reason);
            _unfinished--;
            context.Release(row);
        }
        else
        {
            context.Feed(row, token);
        }
    }

    public void Abort()
    {
        foreach (var output in _outputs)
        {
            if (!output.Finished)
            {
                output.Finish(FinishReason.Abort);
                _unfinished--;
            }
        }
    }
}
