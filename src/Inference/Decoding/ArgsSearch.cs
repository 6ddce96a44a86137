using System.Numerics.Tensors;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;

namespace Serving.Inference.Decoding;

/// <summary>
/// <c>alignment: {"method": "args", "k": 10, "weight": 1.5}</c> (ARGS, Khanov et al.): at every step the top-k tokens
/// by logit (after penalties and <c>logit_bias</c>) are scored <c>logit(v) + weight · reward(prefix ⊕ v)</c>; greedy takes
/// the best score (ties to the lowest id), otherwise a token is drawn from softmax(score / temperature). A head that
/// reads the embedding output scores a candidate from its embedding alone (one row, no extra pass); any other head
/// needs the candidate's forward pass, so the k candidates run as k forked rows in one decode step and the chosen row
/// continues without recomputation. Streams token by token.
/// </summary>
public sealed record ArgsSpec(int K = ArgsSpec.DefaultK, float Weight = ArgsSpec.DefaultWeight) : DecodingSpec
{
    public override string Method => "args";

    /// <summary>The paper's setting.</summary>
    public const int DefaultK = 10;

    /// <summary>The paper's setting.</summary>
    public const float DefaultWeight = 1.5f;

    /// <summary>Most candidates per step.</summary>
    public const int MaxK = 64;

    /// <summary>Whether candidates of <paramref name="request"/> are scored from their embeddings (one row) rather than forked rows.</summary>
    internal static bool ScoresFromEmbedding(GenerationRequest request) => request.RewardHead is { Layer: 0 };

    public override int MaxRows(GenerationRequest request) => ScoresFromEmbedding(request) ? 1 : K;

    public override void Validate(GenerationRequest request, int capacity)
    {
        AlignmentChecks.Common(request);
        var max = ScoresFromEmbedding(request) ? MaxK : Math.Min(MaxK, capacity);
        if (K < 1 || K > max) throw new SamplingParameterException("alignment.k", $"alignment.k must be between 1 and {max} for this reward head on this node, got {K}.");
        if (!(Math.Abs(Weight) <= 1000f)) throw new SamplingParameterException("alignment.weight", $"alignment.weight must be a finite number in [-1000, 1000], got {Weight}.");
    }

    public override IDecodingStrategy Create(DecodingSetup setup) => new ArgsStrategy(setup, this);
}

/// <summary>The strategy of <see cref="ArgsSpec"/>.</summary>
internal sealed class ArgsStrategy : IDecodingStrategy
{
    private readonly ArgsSpec _spec;
    private readonly DecodingSetup _setup;
    private readonly ChoiceRun _choice;
    private readonly bool _fromEmbedding;
    private readonly int _k;
    private readonly float[] _work;        // [V] transformed logits
    private readonly int[] _candidates;     // [k] token ids
    private readonly float[] _logits;       // [k] their transformed logits
    private readonly float[] _scores;       // [k]
    private readonly float[] _rowLogits;    // fork mode: [k, V] each candidate row's next logits
    private readonly float[] _rowRewards;   // fork mode: [k]
    private readonly DecodingRow?[] _rows;  // fork mode: candidate rows
    private readonly float[] _embedding;
    private readonly float[] _headScratch;
    private Xoshiro256StarStar _rng;
    private int _awaiting;                  // fork mode: candidate rows whose step has not reported yet
    private int _steps;
    private bool _started;

    public ArgsStrategy(DecodingSetup setup, ArgsSpec spec)
    {
        _spec = spec;
        _setup = setup;
        var request = setup.Request;
        var vocab = setup.VocabSize;
        _choice = setup.CreateChoice(0, request.Sampling);
        _fromEmbedding = ArgsSpec.ScoresFromEmbedding(request);
        _k = Math.Min(spec.K, vocab);
        _work = new float[vocab];
        _candidates = new int[_k];
        _logits = new float[_k];
        _scores = new float[_k];
        _rowLogits = _fromEmbedding ? [] : new float[_k * vocab];
        _rowRewards = new float[_k];
        _rows = new DecodingRow?[_k];
        _embedding = new float[setup.Model.Config.HiddenSize];
        _headScratch = new float[request.RewardHead!.ScratchSize];
        _rng = new Xoshiro256StarStar(_choice.Sampler.Seed);
        Seeds = [_choice.Sampler.Seed];
    }

    public bool IsDone
    {
        get
        {
            if (!_choice.Finished) return false;
            _setup.Handle.Alignment ??= Report();
            return true;
        }
    }

    public ulong[] Seeds { get; }

    public void OnLogits(IDecodingContext context, DecodingRow row, ReadOnlySpan<float> logits)
    {
        if (_fromEmbedding)
        {
            if (_choice.Settle(context, row)) return;
            SelectCandidates(logits);
            var head = _setup.Request.RewardHead!;
            for (var i = 0; i < _k; i++)
            {
                _setup.Model.Embed(_candidates[i], row.Length, _embedding);
                _rowRewards[i] = row.RewardWith(head.Score(_embedding, _headScratch));
            }
            var chosen = Choose();
            _choice.Take(context, row, _candidates[chosen], 0f);
            return;
        }
        if (!_started)
        {
            // The prompt's logits: the first candidates.
            _started = true;
            Branch(context, row, logits);
            return;
        }
        // A candidate row's step: keep its reward and its next logits for OnStepEnd.
        _awaiting--;
        _rowRewards[row.Tag] = row.Reward;
        logits.CopyTo(_rowLogits.AsSpan(row.Tag * logits.Length, logits.Length));
    }

    public void OnStepEnd(IDecodingContext context)
    {
        // Only once every candidate of the branch has been through its decode step (not after the prompt's prefill).
        if (_fromEmbedding || _rows[0] is null || _awaiting > 0 || _choice.Finished) return;
        var chosen = Choose();
        var row = _rows[chosen]!;
        for (var i = 0; i < _k; i++)
        {
            if (i != chosen) context.Release(_rows[i]!);
            _rows[i] = null;
        }
        if (_choice.Commit(context, row, _candidates[chosen], 0f, _rowRewards[chosen])) return;
        var vocab = _setup.VocabSize;
        Branch(context, row, _rowLogits.AsSpan(chosen * vocab, vocab));
    }

    /// <summary>Fork mode: the row's next candidates, one per row (the row itself takes the first), fed for one step.</summary>
    private void Branch(IDecodingContext context, DecodingRow row, ReadOnlySpan<float> logits)
    {
        SelectCandidates(logits);
        row.Tag = 0;
        _rows[0] = row;
        for (var i = 1; i < _k; i++)
        {
            _rows[i] = context.Fork(row);
            _rows[i]!.Tag = i;
        }
        for (var i = 0; i < _k; i++) context.Feed(_rows[i]!, _candidates[i]);
        _awaiting = _k;
        _setup.Handle.AddGeneratedTokens(_k - 1); // the candidates beside the one kept
    }

    /// <summary>Top-k of the transformed logits, best first (ties to the lowest id).</summary>
    private void SelectCandidates(ReadOnlySpan<float> logits)
    {
        _choice.Sampler.Transform(logits, _work);
        TopSelection.SelectTopK(_work, _k, _candidates);
        TopSelection.SortBestFirst(_work, _candidates);
        for (var i = 0; i < _k; i++) _logits[i] = _work[_candidates[i]];
    }

    /// <summary>logit + w·reward per candidate; the argmax (greedy) or a draw from softmax(score / T).</summary>
    private int Choose()
    {
        _steps++;
        for (var i = 0; i < _k; i++) _scores[i] = _logits[i] + _spec.Weight * _rowRewards[i];
        var p = _choice.Sampler.Parameters;
        if (p.IsGreedy)
        {
            var best = 0;
            for (var i = 1; i < _k; i++)
            {
                if (_scores[i] > _scores[best] || (_scores[i] == _scores[best] && _candidates[i] < _candidates[best])) best = i;
            }
            return best;
        }
        var max = TensorPrimitives.Max(_scores);
        double total = 0;
        for (var i = 0; i < _k; i++) total += Math.Exp((_scores[i] - max) / p.Temperature);
        var target = _rng.NextDouble() * total;
        double cumulative = 0;
        for (var i = 0; i < _k; i++)
        {
            cumulative += Math.Exp((_scores[i] - max) / p.Temperature);
            if (cumulative > target) return i;
        }
        return _k - 1;
    }

    public void Abort() => _choice.Abort();

    private AlignmentReport Report() => new() { Method = "args", CandidatesPerStep = _k, Steps = _steps };
}
