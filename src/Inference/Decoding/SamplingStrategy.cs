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
    public override string Method => "sampling";

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
    private readonly ChoiceRun[] _choices;
    private readonly bool _logprobs;
    private bool _started;
    private int _unfinished;

    public SamplingStrategy(DecodingSetup setup)
    {
        var request = setup.Request;
        _logprobs = request.Logprobs;
        _choices = new ChoiceRun[request.Choices];
        for (var c = 0; c < _choices.Length; c++) _choices[c] = setup.CreateChoice(c, ChoiceParameters(request.Sampling, c));
        _unfinished = _choices.Length;
        Seeds = Array.ConvertAll(_choices, s => s.Sampler.Seed);
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
            Span<DecodingRow> rows = new DecodingRow[_choices.Length];
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
        if (_choices[row.Tag].Step(context, row, logits, _logprobs)) _unfinished--;
    }

    public void Abort()
    {
        foreach (var choice in _choices)
        {
            if (choice.Finished) continue;
            choice.Abort();
            _unfinished--;
        }
    }
}
