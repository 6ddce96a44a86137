using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace Serving.Inference.Sampling;

/// <summary>
/// Picks the next token of one sequence. Processing order (vLLM's):
/// <list type="number">
/// <item>penalties on the raw logits: repetition (prompt + output tokens; positive ÷ r, negative × r),
/// then frequency (− f × count) and presence (− p once), both over generated tokens only;</item>
/// <item>temperature (logits ÷ T; T below <see cref="SamplingParameters.GreedyTemperature"/> = argmax, ties to the lowest id,
/// and top-k/top-p/min-p are skipped because they cannot change the argmax);</item>
/// <item>top-k (keep values ≥ the k-th largest);</item>
/// <item>top-p (smallest most-likely set with probability ≥ p, renormalised after top-k);</item>
/// <item>min-p (keep p ≥ min_p × p_max);</item>
/// <item>draw from the remaining distribution with the sequence's own xoshiro256** stream.</item>
/// </list>
/// Reported logprobs are the log-softmax of the raw logits (before penalties and temperature), as vLLM reports by default.
/// All buffers are allocated in the constructor; <see cref="Sample(ReadOnlySpan{float}, out float)"/> and <see cref="Accept"/> allocate nothing.
/// Not thread-safe: one instance per sequence.
/// </summary>
public sealed class TokenSampler
{
    private const int BucketCount = 512;

    private readonly SamplingParameters _parameters;
    private readonly int _vocabSize;
    private readonly float _temperature;
    private readonly bool _greedy;
    private readonly int _topK;
    private readonly float _topP;
    private readonly float _minP;
    private readonly float _repetitionPenalty;
    private readonly float _presencePenalty;
    private readonly float _frequencyPenalty;
    private readonly int _topLogprobs;

    // Scratch, vocabulary-sized, allocated once.
    private readonly float[] _work;
    private readonly float[] _exp;
    private readonly float[] _candidates;
    private readonly int[] _ids;
    private readonly int[] _heap;

    // Penalty state; null when no penalty is active.
    private readonly int[]? _counts;
    private readonly bool[]? _seen;
    private readonly int[]? _seenIds;
    private readonly int[]? _outputIds;
    private int _seenCount;
    private int _outputCount;

    private readonly int[] _topIds;
    private readonly float[] _topValues;
    private int _topCount;

    private Xoshiro256StarStar _rng;
    private int _generated;

    /// <summary>Validates <paramref name="parameters"/> (throws <see cref="SamplingParameterException"/>) and allocates all scratch.</summary>
    /// <param name="promptTokens">Prompt ids; they count as "seen" for the repetition penalty only.</param>
    public TokenSampler(SamplingParameters parameters, int vocabSize, ReadOnlySpan<int> promptTokens)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        parameters.Validate(vocabSize);
        _parameters = parameters;
        _vocabSize = vocabSize;
        _temperature = parameters.Temperature;
        _greedy = parameters.IsGreedy;
        _topK = parameters.TopK > 0 && parameters.TopK < vocabSize ? parameters.TopK : 0;
        _topP = parameters.TopP;
        _minP = parameters.MinP;
        _repetitionPenalty = parameters.RepetitionPenalty;
        _presencePenalty = parameters.PresencePenalty;
        _frequencyPenalty = parameters.FrequencyPenalty;
        _topLogprobs = parameters.TopLogprobs ?? 0;

        _work = new float[vocabSize];
        _exp = new float[vocabSize];
        _candidates = new float[vocabSize];
        _ids = new int[vocabSize];
        _heap = new int[Math.Max(Math.Min(_topK, TopSelection.HeapLimit), _topLogprobs)];
        _topIds = new int[_topLogprobs];
        _topValues = new float[_topLogprobs];

        if (parameters.HasPenalties)
        {
            _counts = new int[vocabSize];
            _seen = new bool[vocabSize];
            _seenIds = new int[vocabSize];
            _outputIds = new int[vocabSize];
            foreach (int token in promptTokens)
            {
                CheckToken(token, nameof(promptTokens));
                MarkSeen(token);
            }
        }
        else
        {
            foreach (int token in promptTokens)
            {
                CheckToken(token, nameof(promptTokens));
            }
        }

        Seed = parameters.Seed ?? RandomSeed();
        _rng = new Xoshiro256StarStar(Seed);
    }

    private TokenSampler(TokenSampler parent, ulong? newSeed)
    {
        _parameters = parent._parameters;
        _vocabSize = parent._vocabSize;
        _temperature = parent._temperature;
        _greedy = parent._greedy;
        _topK = parent._topK;
        _topP = parent._topP;
        _minP = parent._minP;
        _repetitionPenalty = parent._repetitionPenalty;
        _presencePenalty = parent._presencePenalty;
        _frequencyPenalty = parent._frequencyPenalty;
        _topLogprobs = parent._topLogprobs;

        _work = new float[_vocabSize];
        _exp = new float[_vocabSize];
        _candidates = new float[_vocabSize];
        _ids = new int[_vocabSize];
        _heap = new int[parent._heap.Length];
        _topIds = (int[])parent._topIds.Clone();
        _topValues = (float[])parent._topValues.Clone();
        _topCount = parent._topCount;

        _counts = (int[]?)parent._counts?.Clone();
        _seen = (bool[]?)parent._seen?.Clone();
        _seenIds = (int[]?)parent._seenIds?.Clone();
        _outputIds = (int[]?)parent._outputIds?.Clone();
        _seenCount = parent._seenCount;
        _outputCount = parent._outputCount;
        _generated = parent._generated;

        if (newSeed is ulong seed)
        {
            Seed = seed;
            _rng = new Xoshiro256StarStar(seed);
        }
        else
        {
            Seed = parent.Seed;
            _rng = parent._rng;
        }
    }

    /// <summary>The validated parameters this sampler was built with.</summary>
    public SamplingParameters Parameters => _parameters;

    /// <summary>Vocabulary size; <see cref="Sample(ReadOnlySpan{float}, out float)"/> expects exactly this many logits.</summary>
    public int VocabSize => _vocabSize;

    /// <summary>Seed of the random stream (drawn at random when the request gave none), for logs and replays.</summary>
    public ulong Seed { get; }

    /// <summary>Tokens passed to <see cref="Accept"/> so far.</summary>
    public int GeneratedCount => _generated;

    /// <summary>Entries <see cref="FillTopLogprobs"/> writes after the last <see cref="Sample(ReadOnlySpan{float}, out float)"/>.</summary>
    public int TopLogprobsCount => _topCount;

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

    private int SampleCore(ReadOnlySpan<float> logits, bool wantLogprob, out float logprob)
    {
        if (logits.Length != _vocabSize)
        {
            throw new ArgumentException($"Expected {_vocabSize} logits, got {logits.Length}.", nameof(logits));
        }

        if (_greedy && !wantLogprob && _topLogprobs == 0 && _counts is null)
        {
            // IndexOfMax returns the first NaN if there is one, else the first maximum; so this one pass makes the
            // same choice and the same finiteness check as the general path below.
            int best = TensorPrimitives.IndexOfMax(logits);
            if (!float.IsFinite(logits[best]))
            {
                throw new ArgumentException($"Logits must have a finite maximum, got {logits[best]}.", nameof(logits));
            }
            _topCount = 0;
            logprob = 0f;
            return best;
        }

        // Raw log-softmax normaliser, summed in double so logprobs hold to ~1e-7 over a 50k vocabulary.
        float rawMax = TensorPrimitives.Max(logits);
        if (!float.IsFinite(rawMax))
        {
            // NaN anywhere, +inf, or every token masked: an engine bug, not something to sample from.
            throw new ArgumentException($"Logits must have a finite maximum, got {rawMax}.", nameof(logits));
        }
        // exp(raw - max) serves both the normaliser and, at temperature 1 without penalties, the draw.
        bool drawUsesRawExp = !_greedy && _counts is null && _temperature == 1f;
        bool needZ = wantLogprob || _topLogprobs > 0;
        double logZ = 0;
        if (needZ || drawUsesRawExp)
        {
            TensorPrimitives.Subtract(logits, rawMax, _exp);
            TensorPrimitives.Exp(_exp, _exp);
        }
        if (needZ)
        {
            logZ = rawMax + Math.Log(SumAsDouble(_exp));
        }
        CaptureTopLogprobs(logits, logZ);

        ReadOnlySpan<float> processed = logits;
        bool expReady = drawUsesRawExp;
        if (_counts is not null)
        {
            logits.CopyTo(_work);
            ApplyPenalties(_work);
            processed = _work;
        }

        int token;
        if (_greedy)
        {
            // IndexOfMax returns the first occurrence, so ties go to the lowest id.
            token = TensorPrimitives.IndexOfMax(processed);
        }
        else
        {
            if (_temperature != 1f)
            {
                TensorPrimitives.Divide(processed, _temperature, _work);
                processed = _work;
            }
            token = Draw(processed, expReady);
        }

        logprob = wantLogprob ? (float)(logits[token] - logZ) : 0f;
        return token;
    }

    /// <summary>
    /// Copies the top alternatives of the last <see cref="Sample(ReadOnlySpan{float}, out float)"/> (raw log-softmax, best first, ties to the lowest id)
    /// and returns how many were written: the smaller of <see cref="TopLogprobsCount"/> and the spans' lengths.
    /// </summary>
    public int FillTopLogprobs(Span<int> ids, Span<float> logprobs)
    {
        int n = Math.Min(_topCount, Math.Min(ids.Length, logprobs.Length));
        _topIds.AsSpan(0, n).CopyTo(ids);
        _topValues.AsSpan(0, n).CopyTo(logprobs);
        return n;
    }

    /// <summary>Records a generated token for the penalties and <see cref="GeneratedCount"/>.</summary>
    public void Accept(int token)
    {
        CheckToken(token, nameof(token));
        _generated++;
        if (_counts is not null)
        {
            if (_counts[token]++ == 0)
            {
                _outputIds![_outputCount++] = token;
            }
            MarkSeen(token);
        }
    }

    /// <summary>
    /// An independent copy for best-of-n or beams: same penalty counts and, unless <paramref name="newSeed"/> is given,
    /// the same random state, so parent and fork draw the same tokens from the same logits.
    /// </summary>
    public TokenSampler Fork(ulong? newSeed = null) => new(this, newSeed);

    /// <summary>Applies repetition, frequency and presence penalties in place (exposed for tests against a reference).</summary>
    internal void ApplyPenalties(Span<float> logits)
    {
        if (_counts is null)
        {
            return;
        }
        if (_repetitionPenalty != 1f)
        {
            float r = _repetitionPenalty;
            for (int i = 0; i < _seenCount; i++)
            {
                int id = _seenIds![i];
                float x = logits[id];
                logits[id] = x > 0f ? x / r : x * r;
            }
        }
        if (_frequencyPenalty != 0f || _presencePenalty != 0f)
        {
            for (int i = 0; i < _outputCount; i++)
            {
                int id = _outputIds![i];
                logits[id] -= _frequencyPenalty * _counts[id];
                logits[id] -= _presencePenalty;
            }
        }
    }

    private void CaptureTopLogprobs(ReadOnlySpan<float> logits, double logZ)
    {
        int n = _topLogprobs;
        if (n == 0)
        {
            _topCount = 0;
            return;
        }
        n = Math.Min(n, _vocabSize);
        Span<int> heap = _heap.AsSpan(0, n);
        TopSelection.SelectTopK(logits, n, heap);
        TopSelection.SortBestFirst(logits, heap);
        for (int i = 0; i < n; i++)
        {
            _topIds[i] = heap[i];
            _topValues[i] = (float)(logits[heap[i]] - logZ);
        }
        _topCount = n;
    }

    /// <summary>Top-k, top-p, min-p and the draw over processed logits; <paramref name="expReady"/>: _exp already holds exp(w - max).</summary>
    private int Draw(ReadOnlySpan<float> w, bool expReady)
    {
        // With exp values already computed from the raw logits, only top-k still needs the maximum.
        float max = _topK > 0 || !expReady ? TensorPrimitives.Max(w) : 0f;
        int n;

        if (_topK > 0)
        {
            float kth = TopSelection.KthLargest(w, _topK, _heap, _exp);
            n = GatherAtLeast(w, kth);
            Span<float> e = _candidates.AsSpan(0, n);
            TensorPrimitives.Subtract(e, max, e);
            TensorPrimitives.Exp(e, e);
            if (_topP < 1f)
            {
                n = SelectNucleus(0, n, _topP * SumAsDouble(_candidates.AsSpan(0, n)));
            }
        }
        else
        {
            if (!expReady)
            {
                TensorPrimitives.Subtract(w, max, _exp);
                TensorPrimitives.Exp(_exp, _exp);
            }
            if (_topP < 1f)
            {
                n = SelectNucleusFromVocabulary();
            }
            else if (_minP > 0f)
            {
                n = GatherExpAtLeast(_minP * TensorPrimitives.Max(_exp));
            }
            else
            {
                return DrawFull();
            }
        }

        if (_minP > 0f)
        {
            n = KeepMinP(n);
        }
        return DrawFromCandidates(n);
    }

    private int DrawFull()
    {
        double target = _rng.NextDouble() * SumAsDouble(_exp);
        double cumulative = 0;
        int last = -1;
        for (int i = 0; i < _exp.Length; i++)
        {
            float e = _exp[i];
            if (e > 0f)
            {
                cumulative += e;
                last = i;
                if (cumulative > target)
                {
                    return i;
                }
            }
        }
        // Only reachable through rounding between the two sums, or if every logit was -inf.
        return last >= 0 ? last : 0;
    }

    private int DrawFromCandidates(int n)
    {
        ReadOnlySpan<float> e = _candidates.AsSpan(0, n);
        double target = _rng.NextDouble() * SumAsDouble(e);
        double cumulative = 0;
        int last = 0;
        for (int i = 0; i < e.Length; i++)
        {
            if (e[i] > 0f)
            {
                cumulative += e[i];
                last = i;
                if (cumulative > target)
                {
                    return _ids[i];
                }
            }
        }
        return _ids[last];
    }

    /// <summary>Candidates = ids with w ≥ threshold, in id order; values go to _candidates.</summary>
    private int GatherAtLeast(ReadOnlySpan<float> w, float threshold)
    {
        int n = 0;
        int i = 0;
        int width = Vector<float>.Count;
        var t = new Vector<float>(threshold);
        for (; i <= w.Length - width; i += width)
        {
            if (!Vector.GreaterThanOrEqualAny(new Vector<float>(w.Slice(i, width)), t))
            {
                continue;
            }
            for (int j = i; j < i + width; j++)
            {
                if (w[j] >= threshold)
                {
                    _ids[n] = j;
                    _candidates[n++] = w[j];
                }
            }
        }
        for (; i < w.Length; i++)
        {
            if (w[i] >= threshold)
            {
                _ids[n] = i;
                _candidates[n++] = w[i];
            }
        }
        return n;
    }

    /// <summary>Candidates = ids with exp value ≥ threshold (&gt; 0), in id order; a vector compare skips the long tail.</summary>
    private int GatherExpAtLeast(float threshold)
    {
        threshold = MathF.Max(threshold, float.Epsilon);
        ReadOnlySpan<float> e = _exp;
        int n = 0;
        int i = 0;
        int width = Vector<float>.Count;
        var t = new Vector<float>(threshold);
        for (; i <= e.Length - width; i += width)
        {
            if (!Vector.GreaterThanOrEqualAny(new Vector<float>(e.Slice(i, width)), t))
            {
                continue;
            }
            for (int j = i; j < i + width; j++)
            {
                if (e[j] >= threshold)
                {
                    _ids[n] = j;
                    _candidates[n++] = e[j];
                }
            }
        }
        for (; i < e.Length; i++)
        {
            if (e[i] >= threshold)
            {
                _ids[n] = i;
                _candidates[n++] = e[i];
            }
        }
        return n;
    }

    /// <summary>
    /// Top-p over the whole vocabulary without sorting it. One pass buckets the exp values by their top float bits
    /// (8 buckets per octave) and finds the bucket where the cumulative mass, from the top, crosses p. Tokens in
    /// higher buckets are in the nucleus for certain (they precede every other token in the order); only the
    /// boundary bucket's few tokens go through the weighted quickselect. Exact, not an approximation.
    /// </summary>
    private int SelectNucleusFromVocabulary()
    {
        Span<double> mass = stackalloc double[BucketCount];
        mass.Clear();
        double total = 0;
        ReadOnlySpan<float> exp = _exp;
        for (int i = 0; i < exp.Length; i++)
        {
            float e = exp[i];
            mass[Bucket(e)] += e;
            total += e;
        }
        double target = _topP * total;
        double above = 0;
        int boundary = BucketCount - 1;
        for (int b = 0; b < BucketCount; b++)
        {
            if (above + mass[b] >= target)
            {
                boundary = b;
                break;
            }
            above += mass[b];
        }

        // Bucket b holds e in [BucketFloor(b), BucketFloor(b - 1)); the last bucket also holds zeros and subnormals.
        float lower = boundary < BucketCount - 1 ? BucketFloor(boundary) : float.Epsilon;
        float upper = boundary > 0 ? BucketFloor(boundary - 1) : float.PositiveInfinity;
        int certain = 0;
        int undecided = 0;
        int back = _ids.Length - 1;
        int width = Vector<float>.Count;
        var low = new Vector<float>(lower);
        int i0 = 0;
        for (; i0 <= exp.Length - width; i0 += width)
        {
            if (!Vector.GreaterThanOrEqualAny(new Vector<float>(exp.Slice(i0, width)), low))
            {
                continue;
            }
            for (int j = i0; j < i0 + width; j++)
            {
                Classify(exp, j, lower, upper, ref certain, ref undecided, back);
            }
        }
        for (; i0 < exp.Length; i0++)
        {
            Classify(exp, i0, lower, upper, ref certain, ref undecided, back);
        }

        // Undecided tokens were stacked downwards from the end of the arrays: restore id order, then close the gap.
        Span<int> stackedIds = _ids.AsSpan(back - undecided + 1, undecided);
        Span<float> stackedValues = _candidates.AsSpan(back - undecided + 1, undecided);
        stackedIds.Reverse();
        stackedValues.Reverse();
        stackedIds.CopyTo(_ids.AsSpan(certain));
        stackedValues.CopyTo(_candidates.AsSpan(certain));
        double need = target - SumAsDouble(_candidates.AsSpan(0, certain));
        return certain + SelectNucleus(certain, undecided, need);
    }

    private void Classify(ReadOnlySpan<float> exp, int j, float lower, float upper, ref int certain, ref int undecided, int back)
    {
        float e = exp[j];
        if (e >= upper)
        {
            _ids[certain] = j;
            _candidates[certain++] = e;
        }
        else if (e >= lower)
        {
            _ids[back - undecided] = j;
            _candidates[back - undecided] = e;
            undecided++;
        }
    }

    // Float bits >> 20 = sign, exponent and 3 mantissa bits; for e in (0, 1] that is at most 0x3F8 (e = 1).
    private const int TopKey = 0x3F8;

    /// <summary>0 for e ≥ 1, growing as e falls by an eighth of an octave per bucket; the last bucket takes the rest, zero included.</summary>
    private static int Bucket(float e)
    {
        int b = TopKey - (BitConverter.SingleToInt32Bits(e) >> 20);
        return b < 0 ? 0 : (b >= BucketCount ? BucketCount - 1 : b);
    }

    /// <summary>Smallest value in bucket <paramref name="b"/> (for b &lt; BucketCount - 1).</summary>
    private static float BucketFloor(int b) => BitConverter.Int32BitsToSingle((TopKey - b) << 20);

    /// <summary>
    /// Moves the top-p nucleus (the smallest prefix, in probability-descending / id-ascending order, whose mass is
    /// ≥ <paramref name="need"/>) to the front of the segment [start, start + n) and returns its length. A weighted quickselect:
    /// expected O(n) instead of sorting; ids make the order strict, so ties neither degrade the partition nor blur the boundary.
    /// </summary>
    private int SelectNucleus(int start, int n, double need)
    {
        if (need <= 0)
        {
            return 0;
        }
        Span<float> e = _candidates.AsSpan(start, n);
        Span<int> ids = _ids.AsSpan(start, n);
        int lo = 0, hi = n;
        while (hi - lo > 16)
        {
            int pivot = MedianOfThree(e, ids, lo, lo + (hi - lo) / 2, hi - 1);
            Swap(e, ids, pivot, hi - 1);
            float pe = e[hi - 1];
            int pid = ids[hi - 1];
            int store = lo;
            double better = 0;
            for (int i = lo; i < hi - 1; i++)
            {
                if (e[i] > pe || (e[i] == pe && ids[i] < pid))
                {
                    better += e[i];
                    Swap(e, ids, i, store);
                    store++;
                }
            }
            Swap(e, ids, store, hi - 1);
            if (better >= need)
            {
                hi = store;
            }
            else if (better + pe >= need)
            {
                return store + 1;
            }
            else
            {
                need -= better + pe;
                lo = store + 1;
            }
        }

        for (int i = lo + 1; i < hi; i++)
        {
            for (int j = i; j > lo && Better(e, ids, j, j - 1); j--)
            {
                Swap(e, ids, j, j - 1);
            }
        }
        double cumulative = 0;
        for (int i = lo; i < hi; i++)
        {
            cumulative += e[i];
            if (cumulative >= need)
            {
                return i + 1;
            }
        }
        // Reached only through rounding between summation orders.
        return hi;
    }

    private static bool Better(Span<float> e, Span<int> ids, int i, int j) => e[i] > e[j] || (e[i] == e[j] && ids[i] < ids[j]);

    private static int MedianOfThree(Span<float> e, Span<int> ids, int a, int b, int c)
    {
        if (Better(e, ids, a, b))
        {
            return Better(e, ids, b, c) ? b : (Better(e, ids, a, c) ? c : a);
        }
        return Better(e, ids, a, c) ? a : (Better(e, ids, b, c) ? c : b);
    }

    private static void Swap(Span<float> e, Span<int> ids, int i, int j)
    {
        (e[i], e[j]) = (e[j], e[i]);
        (ids[i], ids[j]) = (ids[j], ids[i]);
    }

    private int KeepMinP(int n)
    {
        Span<float> e = _candidates.AsSpan(0, n);
        float threshold = _minP * TensorPrimitives.Max(e);
        int kept = 0;
        for (int i = 0; i < n; i++)
        {
            if (e[i] >= threshold)
            {
                _ids[kept] = _ids[i];
                _candidates[kept++] = e[i];
            }
        }
        return kept;
    }

    private void MarkSeen(int token)
    {
        if (!_seen![token])
        {
            _seen[token] = true;
            _seenIds![_seenCount++] = token;
        }
    }

    private void CheckToken(int token, string paramName)
    {
        if ((uint)token >= (uint)_vocabSize)
        {
            throw new ArgumentOutOfRangeException(paramName, token, $"Token id outside the vocabulary [0, {_vocabSize}).");
        }
    }

    /// <summary>Sum of floats accumulated in double (vectorised by widening).</summary>
    internal static double SumAsDouble(ReadOnlySpan<float> values)
    {
        var acc0 = Vector<double>.Zero;
        var acc1 = Vector<double>.Zero;
        int width = Vector<float>.Count;
        int i = 0;
        for (; i <= values.Length - width; i += width)
        {
            Vector.Widen(new Vector<float>(values.Slice(i, width)), out Vector<double> low, out Vector<double> high);
            acc0 += low;
            acc1 += high;
        }
        double sum = Vector.Sum(acc0 + acc1);
        for (; i < values.Length; i++)
        {
            sum += values[i];
        }
        return sum;
    }

    private static ulong RandomSeed()
    {
        Span<ulong> seed = stackalloc ulong[1];
        System.Security.Cryptography.RandomNumberGenerator.Fill(MemoryMarshal.AsBytes(seed));
        return seed[0];
    }
}
