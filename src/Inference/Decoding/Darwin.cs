using Serving.Inference.Output;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;

namespace Serving.Inference.Decoding;

/// <summary>
/// <c>alignment: {"method": "darwin", "variants": 5, "interval": 40, "iterations": 1}</c> (DARWIN, evolutionary
/// decoding): each iteration the model rewrites the current instruction into variants (mutation, through the chat
/// template), one beam per instruction (the instruction itself and its rewrites) decodes in one batch; every
/// <see cref="Interval"/> tokens each beam's partial response is scored against the <b>original</b> instruction (a
/// scoring row: original prompt + response, prefilled with the reward head), the best <see cref="Survivors"/> survive
/// and every other unfinished beam is replaced by a copy of a random survivor (its KV forked, its text and sampler
/// copied, a new random stream). The best final response over all iterations wins; the archive keeps the two variants
/// that survived most often, and the next iteration mutates the most frequent survivor. The winner streams once known.
/// </summary>
public sealed record DarwinSpec : DecodingSpec
{
    public override string Method => "darwin";

    public const int DefaultVariants = 5;
    public const int DefaultInterval = 40;

    /// <summary>Beams per iteration (the instruction and variants − 1 rewrites of it).</summary>
    public int Variants { get; init; } = DefaultVariants;

    /// <summary>Tokens between two selections (the paper's m).</summary>
    public int Interval { get; init; } = DefaultInterval;

    public int Iterations { get; init; } = 1;

    /// <summary>Beams kept at each selection (the paper's 3).</summary>
    public int Survivors { get; init; } = 3;

    /// <summary>Most tokens of one rewritten instruction.</summary>
    public int MutationMaxTokens { get; init; } = 48;

    /// <summary>The user's instruction (the last user message, or the prompt text).</summary>
    public required string Instruction { get; init; }

    /// <summary>The prompt a beam decodes from for an instruction (the chat template's rendering).</summary>
    public required Func<string, int[]> RenderPrompt { get; init; }

    /// <summary>The prompt that asks the model to rewrite an instruction.</summary>
    public required Func<string, int[]> RenderMutation { get; init; }

    public override int MaxRows(GenerationRequest request) => 2 * Variants;

    public override void Validate(GenerationRequest request, int capacity)
    {
        AlignmentChecks.Common(request);
        if (Variants < 2 || 2 * Variants > capacity) throw new SamplingParameterException("alignment.variants", $"alignment.variants must be between 2 and {capacity / 2} on this node (each beam may need a scoring row beside it), got {Variants}.");
        if (Interval < 1 || Interval > 4096) throw new SamplingParameterException("alignment.interval", $"alignment.interval must be between 1 and 4096 tokens, got {Interval}.");
        if (Iterations < 1 || Iterations > 8) throw new SamplingParameterException("alignment.iterations", $"alignment.iterations must be between 1 and 8, got {Iterations}.");
        if (Survivors < 1 || Survivors > Variants) throw new SamplingParameterException("alignment.survivors", $"alignment.survivors must be between 1 and alignment.variants ({Variants}), got {Survivors}.");
    }

    public override IDecodingStrategy Create(DecodingSetup setup) => new DarwinStrategy(setup, this);
}

/// <summary>The strategy of <see cref="DarwinSpec"/>: a small state machine (mutation → beams with selections → next iteration).</summary>
internal sealed class DarwinStrategy : IDecodingStrategy
{
    private enum Role { Mutation, Beam, Scoring }

    private sealed class Beam
    {
        public required int Variant { get; init; }
        public required TokenSampler Sampler { get; set; }
        public required StopCriteria Stop { get; init; }
        public List<int> Tokens { get; set; } = [];
        public DecodingRow? Row { get; set; }
        public bool Finished { get; set; }
        public float Score { get; set; } = float.NegativeInfinity;
    }

    private readonly DecodingSetup _setup;
    private readonly DarwinSpec _spec;
    private readonly GenerationRequest _request;
    private readonly Dictionary<DecodingRow, (Role Role, int Index)> _roles = [];
    private readonly List<string> _variants = [];         // every variant decoded, in beam order over iterations
    private readonly List<int> _survivals = [];           // per variant: selections survived
    private readonly List<float> _finalRewards = [];      // per beam over iterations
    private readonly List<List<int>> _finalTokens = [];
    private readonly Xoshiro256StarStar _rng;
    private readonly ulong _seed;
    private string _instruction;
    private int _iteration;
    private Beam[] _beams = [];
    private List<int>[] _mutations = [];
    private TokenSampler[] _mutationSamplers = [];
    private int _mutationsLeft;
    private int _scoringLeft;
    private bool _finalScoring;
    private int _nextCheckpoint;
    private bool _done;

    public DarwinStrategy(DecodingSetup setup, DarwinSpec spec)
    {
        _setup = setup;
        _spec = spec;
        _request = setup.Request;
        _instruction = spec.Instruction;
        _seed = _request.Sampling.Seed ?? (ulong)Random.Shared.NextInt64();
        _rng = new Xoshiro256StarStar(_seed ^ 0xDA2817);
        Seeds = [_seed];
    }

    public bool IsDone => _done;

    public ulong[] Seeds { get; }

    public void OnLogits(IDecodingContext context, DecodingRow row, ReadOnlySpan<float> logits)
    {
        if (!_roles.TryGetValue(row, out var role))
        {
            // The request's own prompt row: its prompt is the rendered instruction, which beam 0 decodes anyway.
            context.Release(row);
            StartMutation(context);
            return;
        }
        switch (role.Role)
        {
            case Role.Mutation:
                OnMutationLogits(context, row, role.Index, logits);
                break;
            case Role.Beam:
                OnBeamLogits(context, row, role.Index, logits);
                break;
            default:
                _beams[role.Index].Score = row.Reward;
                Release(context, row);
                _scoringLeft--;
                break;
        }
    }

    public void OnStepEnd(IDecodingContext context)
    {
        if (_done) return;
        if (_mutationsLeft == 0 && _mutations.Length > 0)
        {
            StartBeams(context);
            return;
        }
        if (_beams.Length == 0 || _scoringLeft > 0) return;
        if (_finalScoring)
        {
            EndIteration(context);
            return;
        }
        if (_nextCheckpoint == -1)
        {
            Select(context);
            // No return: when every beam has ended by now, the final scoring starts in this call, because no row is
            // left to bring this request another step.
        }
        var unfinished = _beams.Where(b => !b.Finished).ToList();
        if (unfinished.Count == 0)
        {
            ScoreAll(context, final: true);
        }
        else if (unfinished.All(b => b.Tokens.Count >= _nextCheckpoint))
        {
            ScoreAll(context, final: false);
            _nextCheckpoint = -1; // selection once the scores are in
        }
    }

    private void StartMutation(IDecodingContext context)
    {
        var count = _spec.Variants - 1;
        _mutations = new List<int>[count];
        _mutationSamplers = new TokenSampler[count];
        var mutationParameters = new SamplingParameters { Temperature = 0.7f, TopK = 40, MaxTokens = _spec.MutationMaxTokens };
        var prompt = _spec.RenderMutation(_instruction);
        for (var i = 0; i < count; i++)
        {
            _mutations[i] = [];
            _mutationSamplers[i] = new TokenSampler(mutationParameters with { Seed = unchecked(_seed + 1000 * (ulong)(_iteration + 1) + (ulong)i) }, _setup.VocabSize, prompt);
        }
        _mutationsLeft = count;
        var first = context.Start(prompt);
        _roles[first] = (Role.Mutation, -1); // forks into one row per variant when its prompt is in
    }

    private void OnMutationLogits(IDecodingContext context, DecodingRow row, int index, ReadOnlySpan<float> logits)
    {
        if (index < 0)
        {
            // The rewrite prompt is in the cache: one row per variant. Every fork is taken before any step, since a
            // step may end its row at once (an end-of-sequence first token releases it; a released row cannot be forked).
            var rows = new DecodingRow[_mutations.Length];
            rows[0] = row;
            for (var i = 1; i < rows.Length; i++) rows[i] = context.Fork(row);
            for (var i = 0; i < rows.Length; i++)
            {
                _roles[rows[i]] = (Role.Mutation, i);
                MutationStep(context, rows[i], i, logits);
            }
            return;
        }
        MutationStep(context, row, index, logits);
    }

    private void MutationStep(IDecodingContext context, DecodingRow row, int i, ReadOnlySpan<float> logits)
    {
        var sampler = _mutationSamplers[i];
        var token = sampler.Sample(logits);
        sampler.Accept(token);
        _setup.Handle.AddGeneratedTokens(1);
        var end = _setup.EosIds.Contains(token) || sampler.GeneratedCount >= _spec.MutationMaxTokens || row.Length + 1 >= context.MaxContext;
        if (!_setup.EosIds.Contains(token)) _mutations[i].Add(token);
        if (end)
        {
            Release(context, row);
            _mutationsLeft--;
        }
        else
        {
            context.Feed(row, token);
        }
    }

    private void StartBeams(IDecodingContext context)
    {
        var instructions = new List<string> { _instruction };
        foreach (var m in _mutations)
        {
            var text = _setup.Tokenizer.Decode(m.ToArray(), skipSpecialTokens: true).Trim();
            instructions.Add(text.Length == 0 ? _instruction : text);
        }
        _mutations = [];
        _beams = new Beam[instructions.Count];
        for (var j = 0; j < instructions.Count; j++)
        {
            _variants.Add(instructions[j]);
            _survivals.Add(0);
            var p = _request.Sampling with { Seed = unchecked(_seed + (ulong)(_iteration * _spec.Variants + j)) };
            var prompt = _spec.RenderPrompt(instructions[j]);
            var beam = new Beam
            {
                Variant = _variants.Count - 1,
                Sampler = new TokenSampler(p, _setup.VocabSize, prompt),
                Stop = new StopCriteria(p, _setup.EosIds),
            };
            beam.Row = context.Start(prompt);
            _roles[beam.Row] = (Role.Beam, j);
            _beams[j] = beam;
        }
        _nextCheckpoint = _spec.Interval;
    }

    private void OnBeamLogits(IDecodingContext context, DecodingRow row, int j, ReadOnlySpan<float> logits)
    {
        var beam = _beams[j];
        var token = beam.Sampler.Sample(logits);
        beam.Sampler.Accept(token);
        beam.Tokens.Add(token);
        _setup.Handle.AddGeneratedTokens(1);
        if (beam.Stop.Check(token, beam.Tokens.Count) is not null || row.Length + 1 >= context.MaxContext)
        {
            beam.Finished = true;
            beam.Row = null;
            Release(context, row);
        }
        else
        {
            context.Feed(row, token);
        }
    }

    /// <summary>Starts a scoring row per beam (finished ones too, so every beam is ranked on its current text): original prompt + its response.</summary>
    private void ScoreAll(IDecodingContext context, bool final)
    {
        _finalScoring = final;
        for (var j = 0; j < _beams.Length; j++)
        {
            var beam = _beams[j];
            var scoring = context.Start([.. _request.PromptTokens, .. beam.Tokens]);
            _roles[scoring] = (Role.Scoring, j);
            _scoringLeft++;
        }
    }

    /// <summary>The best beams survive; every other unfinished beam becomes a copy of a random unfinished survivor.</summary>
    private void Select(IDecodingContext context)
    {
        var ranked = Enumerable.Range(0, _beams.Length).OrderByDescending(j => _beams[j].Score).ThenBy(j => j).ToList();
        var survivors = ranked.Take(_spec.Survivors).ToList();
        foreach (var s in survivors) _survivals[_beams[s].Variant]++;
        var donors = survivors.Where(s => !_beams[s].Finished).ToList();
        if (donors.Count > 0)
        {
            foreach (var j in ranked.Skip(_spec.Survivors))
            {
                var beam = _beams[j];
                if (beam.Finished) continue;
                var donor = _beams[donors[(int)(_rng.NextUInt64() % (ulong)donors.Count)]];
                Release(context, beam.Row!);
                beam.Row = context.Fork(donor.Row!);
                _roles[beam.Row] = (Role.Beam, j);
                context.Feed(beam.Row, donor.Row!.PendingToken);
                beam.Tokens = [.. donor.Tokens];
                beam.Sampler = donor.Sampler.Fork(_rng.NextUInt64());
            }
        }
        var longest = _beams.Where(b => !b.Finished).Select(b => b.Tokens.Count).DefaultIfEmpty(0).Max();
        _nextCheckpoint = Math.Max(longest, 0) + _spec.Interval;
    }

    private void EndIteration(IDecodingContext context)
    {
        _finalScoring = false;
        foreach (var beam in _beams)
        {
            _finalRewards.Add(beam.Score);
            _finalTokens.Add(beam.Tokens);
        }
        _beams = [];
        _iteration++;
        if (_iteration < _spec.Iterations)
        {
            // The next iteration mutates the variant that survived most often (the first on ties).
            _instruction = _variants[Archive().First()];
            StartMutation(context);
            return;
        }
        Finish();
    }

    /// <summary>Indexes of the two variants that survived most often.</summary>
    private IEnumerable<int> Archive() =>
        Enumerable.Range(0, _variants.Count).OrderByDescending(i => _survivals[i]).ThenBy(i => i).Take(2);

    private void Finish()
    {
        var best = 0;
        for (var i = 1; i < _finalRewards.Count; i++)
        {
            if (_finalRewards[i] > _finalRewards[best]) best = i;
        }
        var output = _setup.CreateOutput(0, _request.Sampling);
        var tokens = _finalTokens[best];
        var sampler = new TokenSampler(_request.Sampling, _setup.VocabSize, []);
        FinishReason? reason = null;
        foreach (var token in tokens)
        {
            _setup.Handle.AddCompletionTokens(1);
            reason = output.Append(token, 0f, sampler, contextFull: false, _request.ReturnTokenRewards ? _finalRewards[best] : null);
            if (reason is not null) break;
        }
        output.Finish(reason ?? FinishReason.Length, _finalRewards[best]);
        _setup.Handle.Alignment = new AlignmentReport
        {
            Method = "darwin",
            CandidateRewards = [.. _finalRewards],
            Chosen = best,
            Variants = [.. _variants],
            Archive = Archive().Select(i => _variants[i]).ToList(),
        };
        _done = true;
    }

    private void Release(IDecodingContext context, DecodingRow row)
    {
        _roles.Remove(row);
        context.Release(row);
    }

    public void Abort()
    {
        if (_done) return;
        _setup.Handle.Write(new GenerationEvent(GenerationEventKind.Finished, 0, null, -1, 0f, null, FinishReason.Abort));
        _done = true;
    }
}
