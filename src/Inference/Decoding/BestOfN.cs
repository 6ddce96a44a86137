using Serving.Inference.Output;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;

namespace Serving.Inference.Decoding;

/// <summary>
/// <c>alignment: {"method": "best_of_n", "n": N}</c>: N samples from one prefill (forked), each scored by the request's
/// reward head in the decode step; the highest final reward wins (ties to the lowest index). Sample i draws with seed
/// + i, exactly like choice i of a plain request. With <see cref="ReturnAll"/> every sample is returned as choice i.
/// The winner streams once known (all samples finished).
/// </summary>
public sealed record BestOfNSpec(int N, bool ReturnAll = false) : DecodingSpec
{
    public override string Method => "best_of_n";

    /// <summary>Most samples per request.</summary>
    public const int MaxN = 64;

    public override int MaxRows(GenerationRequest request) => N;

    public override void Validate(GenerationRequest request, int capacity)
    {
        AlignmentChecks.Common(request);
        if (N < 1 || N > Math.Min(MaxN, capacity))
        {
            throw new SamplingParameterException("alignment.n", $"alignment.n must be between 1 and {Math.Min(MaxN, capacity)} on this node, got {N}.");
        }
    }

    public override IDecodingStrategy Create(DecodingSetup setup) => new BestOfNStrategy(setup, this);
}

/// <summary>The strategy of <see cref="BestOfNSpec"/>.</summary>
internal sealed class BestOfNStrategy : IDecodingStrategy
{
    private readonly BestOfNSpec _spec;
    private readonly GenerationHandle _handle;
    private readonly ChoiceRun[] _samples;
    private readonly BufferedSink[] _buffers;
    private bool _started;
    private int _unfinished;
    private bool _done;

    public BestOfNStrategy(DecodingSetup setup, BestOfNSpec spec)
    {
        _spec = spec;
        _handle = setup.Handle;
        var request = setup.Request;
        _samples = new ChoiceRun[spec.N];
        _buffers = new BufferedSink[spec.N];
        for (var i = 0; i < spec.N; i++)
        {
            _buffers[i] = new BufferedSink();
            var p = SamplingStrategy.ChoiceParameters(request.Sampling, i);
            var output = setup.CreateOutput(i, p);
            output.Sink = _buffers[i];
            _samples[i] = new ChoiceRun(new TokenSampler(p, setup.VocabSize, request.PromptTokens), output, _handle, scored: true, request.ReturnTokenRewards)
            {
                CountsAsCompletion = false,
            };
        }
        _unfinished = spec.N;
        Seeds = Array.ConvertAll(_samples, s => s.Sampler.Seed);
    }

    public bool IsDone => _done;

    public ulong[] Seeds { get; }

    public void OnLogits(IDecodingContext context, DecodingRow row, ReadOnlySpan<float> logits)
    {
        if (!_started)
        {
            _started = true;
            row.Tag = 0;
            var rows = new DecodingRow[_samples.Length];
            rows[0] = row;
            for (var i = 1; i < rows.Length; i++)
            {
                rows[i] = context.Fork(row);
                rows[i].Tag = i;
            }
            foreach (var r in rows) Step(context, r, logits);
        }
        else
        {
            Step(context, row, logits);
        }
        if (_unfinished == 0) Finish();
    }

    private void Step(IDecodingContext context, DecodingRow row, ReadOnlySpan<float> logits)
    {
        if (_samples[row.Tag].Step(context, row, logits, wantLogprob: false)) _unfinished--;
    }

    /// <summary>Every sample finished: replay the winner (or all) to the client.</summary>
    private void Finish()
    {
        var rewards = Array.ConvertAll(_samples, s => s.FinalReward);
        var best = 0;
        for (var i = 1; i < rewards.Length; i++)
        {
            if (rewards[i] > rewards[best] || float.IsNaN(rewards[best])) best = i;
        }
        if (_spec.ReturnAll)
        {
            for (var i = 0; i < _samples.Length; i++)
            {
                _buffers[i].ReplayInto(_handle, i);
                _handle.AddCompletionTokens(_samples[i].Output.Tokens);
            }
        }
        else
        {
            _buffers[best].ReplayInto(_handle, 0);
            _handle.AddCompletionTokens(_samples[best].Output.Tokens);
        }
        _handle.Alignment = new AlignmentReport { Method = "best_of_n", CandidateRewards = rewards, Chosen = best };
        _done = true;
    }

    public void Abort()
    {
        if (_done) return;
        foreach (var s in _samples) s.Abort();
        var returned = _spec.ReturnAll ? _samples.Length : 1;
        for (var i = 0; i < returned; i++) _handle.Write(new GenerationEvent(GenerationEventKind.Finished, i, null, -1, 0f, null, FinishReason.Abort));
        _done = true;
    }
}

/// <summary>Checks every alignment method shares.</summary>
internal static class AlignmentChecks
{
    public static void Common(GenerationRequest request)
    {
        if (request.RewardHead is null)
        {
            throw new SamplingParameterException("reward_head", "alignment needs a reward head: name one in \"reward_head\" (e.g. \"public/positive\").");
        }
        if (request.Choices != 1)
        {
            throw new SamplingParameterException("n", "n must be 1 with alignment (best_of_n returns its samples with alignment.return_all).");
        }
        if (request.Logprobs)
        {
            throw new SamplingParameterException("logprobs", "logprobs are not supported together with alignment.");
        }
    }
}
