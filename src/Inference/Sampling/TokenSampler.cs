using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace Serving.Inference.Sampling;

/// <summary>
/// Picks the next token of one sequence: the per-row logits pipeline, composed once per request from small stages
/// (vLLM's order):
/// <list type="number">
/// <item><see cref="PenaltyStage"/>: repetition (prompt + output tokens; positive ÷ r, negative × r), then frequency
/// (− f × count) and presence (− p once), both over generated tokens only;</item>
/// <item><see cref="LogitBiasStage"/>: OpenAI's <c>logit_bias</c>;</item>
/// <item>temperature (logits ÷ T; T below <see cref="SamplingParameters.GreedyTemperature"/> = argmax, ties to the lowest
/// id, and the truncation stages are skipped because they cannot change the argmax);</item>
/// <item>truncation: <see cref="TopKStage"/> (keep values ≥ the k-th largest), <see cref="NucleusStage"/> (smallest
/// most-likely set with probability ≥ p, renormalised after top-k), <see cref="MinPStage"/> (keep p ≥ min_p × p_max);</item>
/// <item><see cref="CategoricalDraw"/> from what remains with the sequence's own xoshiro256** stream.</item>
/// </list>
/// Reported logprobs come from <see cref="LogprobStage"/> (log-softmax of the raw logits). The stages run as one fused,
/// allocation-free pass over shared scratch (<see cref="CandidateSet"/>, allocated in the constructor):
/// <see cref="Sample(ReadOnlySpan{float}, out float)"/> and <see cref="Accept"/> allocate nothing. Not thread-safe: one
/// instance per sequence.
/// </summary>
public sealed class TokenSampler
{
    private readonly SamplingParameters _parameters;
    private readonly int _vocabSize;
    private readonly int _topK;
    private readonly PenaltyStage? _penalties;
    private readonly LogitBiasStage? _bias;
    private readonly LogprobStage _logprobs;
    private readonly CandidateSet _scratch;
    private CategoricalDraw _draw;

    /// <summary>Validates <paramref name="parameters"/> (throws <see cref="SamplingParameterException"/>) and allocates all scratch.</summary>
    /// <param name="promptTokens">Prompt ids; they count as "seen" for the repetition penalty only.</param>
    public TokenSampler(SamplingParameters parameters, int vocabSize, ReadOnlySpan<int> promptTokens)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        parameters.Validate(vocabSize);
        foreach (var token in promptTokens) CheckToken(token, vocabSize, nameof(promptTokens));
        _parameters = parameters;
        _vocabSize = vocabSize;
        _topK = parameters.TopK > 0 && parameters.TopK < vocabSize ? parameters.TopK : 0;
        _penalties = PenaltyStage.Create(parameters, vocabSize, promptTokens);
        _bias = LogitBiasStage.Create(parameters);
        _logprobs = new LogprobStage(parameters.TopLogprobs ?? 0);
        _scratch = new CandidateSet(vocabSize, Math.Max(Math.Min(_topK, TopSelection.HeapLimit), _logprobs.TopN));
        Seed = parameters.Seed ?? RandomSeed();
        _draw = new CategoricalDraw(Seed);
    }

    private TokenSampler(TokenSampler parent, ulong? newSeed)
    {
        _parameters = parent._parameters;
        _vocabSize = parent._vocabSize;
        _topK = parent._topK;
        _penalties = parent._penalties?.Clone();
        _bias = parent._bias;
        _logprobs = parent._logprobs.Clone();
        _scratch = new CandidateSet(_vocabSize, parent._scratch.Heap.Length);
        GeneratedCount = parent.GeneratedCount;
        Seed = newSeed ?? parent.Seed;
        _draw = newSeed is ulong seed ? new CategoricalDraw(seed) : parent._draw;
    }

    /// <summary>The validated parameters this sampler was built with.</summary>
    public SamplingParameters Parameters => _parameters;

    /// <summary>Vocabulary size; <see cref="Sample(ReadOnlySpan{float}, out float)"/> expects exactly this many logits.</summary>
    public int VocabSize => _vocabSize;

    /// <summary>Seed of the random stream (drawn at random when the request gave none), for logs and replays.</summary>
    public ulong Seed { get; }

    /// <summary>Tokens passed to <see cref="Accept"/> so far.</summary>
    public int GeneratedCount { get; private set; }

    /// <summary>Entries <see cref="FillTopLogprobs"/> writes after the last <see cref="Sample(ReadOnlySpan{float}, out float)"/>.</summary>
    public int TopLogprobsCount => _logprobs.Count;

    private bool TransformsLogits => _penalties is not null || _bias is not null;

    /// <summary>
    /// Chooses the next token from <paramref name="logits"/> (not modified) and returns it with its raw logprob
    /// (log-softmax of the unprocessed logits). Does not record the token: call <see cref="Accept"/> with the token kept.
    /// Masked tokens may be -inf; NaN or +inf, or all -inf, throws <see cref="ArgumentException"/>.
    /// </summary>
    public int Sample(ReadOnlySpan<float> logits, out float logprob) => SampleCore(logits, wantLogprob: true, out logprob);

    /// <summary>
    /// The same token as <see cref="Sample(ReadOnlySpan{float}, out float)"/> (same random stream, same checks, same top
    /// logprobs for <see cref="FillTopLogprobs"/>) without the chosen token's logprob, for requests that did not ask for
    /// logprobs: the log-softmax normaliser is then computed only when top logprobs or the draw need it, so greedy
    /// decoding without top logprobs is one pass over the logits instead of five.
    /// </summary>
    public int Sample(ReadOnlySpan<float> logits) => SampleCore(logits, wantLogprob: false, out _);

    /// <summary>
    /// Writes the logits after the transforming stages (penalties, <c>logit_bias</c>; not temperature) into
    /// <paramref name="destination"/>: what decoding strategies that rank candidates themselves (ARGS) start from.
    /// </summary>
    public void Transform(ReadOnlySpan<float> logits, Span<float> destination)
    {
        logits.CopyTo(destination);
        _penalties?.Apply(destination);
        _bias?.Apply(destination);
    }

    private int SampleCore(ReadOnlySpan<float> logits, bool wantLogprob, out float logprob)
    {
        if (logits.Length != _vocabSize) throw new ArgumentException($"Expected {_vocabSize} logits, got {logits.Length}.", nameof(logits));
        var greedy = _parameters.IsGreedy;
        if (greedy && !wantLogprob && _logprobs.TopN == 0 && !TransformsLogits)
        {
            // IndexOfMax returns the first NaN if there is one, else the first maximum; so this one pass makes the
            // same choice and the same finiteness check as the general path below.
            var best = TensorPrimitives.IndexOfMax(logits);
            if (!float.IsFinite(logits[best])) throw new ArgumentException($"Logits must have a finite maximum, got {logits[best]}.", nameof(logits));
            _logprobs.Clear();
            logprob = 0f;
            return best;
        }

        var rawMax = TensorPrimitives.Max(logits);
        if (!float.IsFinite(rawMax))
        {
            // NaN anywhere, +inf, or every token masked: an engine bug, not something to sample from.
            throw new ArgumentException($"Logits must have a finite maximum, got {rawMax}.", nameof(logits));
        }
        // exp(raw - max) serves both the normaliser and, at temperature 1 without transforms, the draw.
        var temperature = _parameters.Temperature;
        var drawUsesRawExp = !greedy && !TransformsLogits && temperature == 1f;
        var needZ = wantLogprob || _logprobs.TopN > 0;
        double logZ = 0;
        if (needZ) logZ = LogprobStage.LogNormaliser(logits, rawMax, _scratch.Exp);
        else if (drawUsesRawExp) LogprobStage.ComputeExp(logits, rawMax, _scratch.Exp);
        _logprobs.Capture(logits, logZ, _scratch.Heap);

        ReadOnlySpan<float> processed = logits;
        if (TransformsLogits)
        {
            Transform(logits, _scratch.Work);
            processed = _scratch.Work;
        }

        int token;
        if (greedy)
        {
            // IndexOfMax returns the first occurrence, so ties go to the lowest id.
            token = TensorPrimitives.IndexOfMax(processed);
        }
        else
        {
            if (temperature != 1f)
            {
                TensorPrimitives.Divide(processed, temperature, _scratch.Work);
                processed = _scratch.Work;
            }
            token = Truncate(processed, expReady: drawUsesRawExp);
        }
        logprob = wantLogprob ? (float)(logits[token] - logZ) : 0f;
        return token;
    }

    /// <summary>Top-k, top-p, min-p and the draw over processed logits; <paramref name="expReady"/>: Exp already holds exp(w − max).</summary>
    private int Truncate(ReadOnlySpan<float> w, bool expReady)
    {
        var s = _scratch;
        // With exp values already computed from the raw logits, only top-k still needs the maximum.
        var max = _topK > 0 || !expReady ? TensorPrimitives.Max(w) : 0f;
        var topP = _parameters.TopP;
        var minP = _parameters.MinP;
        int n;
        if (_topK > 0)
        {
            n = TopKStage.Apply(w, _topK, max, s);
            if (topP < 1f) n = NucleusStage.FromCandidates(s, n, topP);
        }
        else
        {
            if (!expReady) LogprobStage.ComputeExp(w, max, s.Exp);
            if (topP < 1f) n = NucleusStage.FromVocabulary(s, topP);
            else if (minP > 0f) n = MinPStage.FromVocabulary(s, minP);
            else return _draw.FromVocabulary(s.Exp);
        }
        if (minP > 0f) n = MinPStage.Apply(s, n, minP);
        return _draw.FromCandidates(s, n);
    }

    /// <summary>
    /// Copies the top alternatives of the last <see cref="Sample(ReadOnlySpan{float}, out float)"/> (raw log-softmax, best first, ties to the lowest id)
    /// and returns how many were written: the smaller of <see cref="TopLogprobsCount"/> and the spans' lengths.
    /// </summary>
    public int FillTopLogprobs(Span<int> ids, Span<float> logprobs) => _logprobs.Fill(ids, logprobs);

    /// <summary>Records a generated token for the penalties and <see cref="GeneratedCount"/>.</summary>
    public void Accept(int token)
    {
        CheckToken(token, _vocabSize, nameof(token));
        GeneratedCount++;
        _penalties?.Accept(token);
    }

    /// <summary>
    /// An independent copy for best-of-n or beams: same penalty counts and, unless <paramref name="newSeed"/> is given,
    /// the same random state, so parent and fork draw the same tokens from the same logits.
    /// </summary>
    public TokenSampler Fork(ulong? newSeed = null) => new(this, newSeed);

    /// <summary>Applies repetition, frequency and presence penalties in place (exposed for tests against a reference).</summary>
    internal void ApplyPenalties(Span<float> logits) => _penalties?.Apply(logits);

    private static void CheckToken(int token, int vocabSize, string paramName)
    {
        if ((uint)token >= (uint)vocabSize) throw new ArgumentOutOfRangeException(paramName, token, $"Token id outside the vocabulary [0, {vocabSize}).");
    }

    private static ulong RandomSeed()
    {
        Span<ulong> seed = stackalloc ulong[1];
        System.Security.Cryptography.RandomNumberGenerator.Fill(MemoryMarshal.AsBytes(seed));
        return seed[0];
    }
}
