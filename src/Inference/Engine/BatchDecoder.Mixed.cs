using Serving.Inference.Runtime;

namespace Serving.Inference.Engine;

// Mixed steps (a model loaded with RuntimeOptions.PackedSteps): one pass over the packed blocks carries the decode
// tokens of running rows and chunks of prompts together, each row at its own positions (chunked prefill, as in
// Sarathi-Serve and vLLM's scheduler), so new prompts do not stall running streams and prompt work is batched.
public sealed partial class BatchDecoder
{
    private Sequence?[] _mixSeq = [];
    private int[] _mixFirst = [];
    private int[] _mixCount = [];
    private bool[] _mixDecode = [];
    private int _mixEntries;
    private int _mixTokens;

    /// <summary>Whether <see cref="BeginStep"/>/<see cref="AddToStep(Sequence, ReadOnlySpan{int})"/>/<see cref="RunStep"/> are available (a model loaded with <see cref="Runtime.RuntimeOptions.PackedSteps"/>).</summary>
    public bool SupportsMixedSteps => _packedSteps is not null;

    /// <summary>Tokens the current mixed step holds so far.</summary>
    public int StepTokens => _mixTokens;

    /// <summary>Most tokens one mixed step can hold.</summary>
    public int MaxStepTokens => _buf.MaxTokensPerStep;

    /// <summary>Starts a mixed step: rows are added with <see cref="AddToStep(Sequence, ReadOnlySpan{int})"/>, then run together by <see cref="RunStep"/>.</summary>
    public void BeginStep()
    {
        if (_packedSteps is null) throw new InvalidOperationException("mixed steps need a model loaded with RuntimeOptions.PackedSteps");
        if (_mixSeq.Length < Capacity)
        {
            _mixSeq = new Sequence?[Capacity];
            _mixFirst = new int[Capacity];
            _mixCount = new int[Capacity];
            _mixDecode = new bool[Capacity];
        }
        Array.Clear(_mixSeq);
        _mixEntries = 0;
        _mixTokens = 0;
    }

    /// <summary>Adds <paramref name="seq"/>'s <see cref="Sequence.PendingToken"/> to the current step (a decode row); returns its entry's index.</summary>
    public int AddToStep(Sequence seq)
    {
        if (seq.PendingToken < 0) throw new InvalidOperationException($"sequence {seq.Id} has no pending token");
        var pending = seq.PendingToken;
        var entry = Add(seq, new ReadOnlySpan<int>(in pending));
        _mixDecode[entry] = true;
        return entry;
    }

    /// <summary>
    /// Adds <paramref name="tokens"/> (a chunk of its prompt) of <paramref name="seq"/> to the current step, after its
    /// cached tokens. A row appears at most once per step. Returns the entry's index in <see cref="RunStep"/>'s logits.
    /// </summary>
    public int AddToStep(Sequence seq, ReadOnlySpan<int> tokens)
    {
        var entry = Add(seq, tokens);
        _mixDecode[entry] = false;
        return entry;
    }

    private int Add(Sequence seq, ReadOnlySpan<int> tokens)
    {
        if (_mixSeq.Length == 0) throw new InvalidOperationException("call BeginStep first");
        EnsureActive(seq);
        var t = tokens.Length;
        if (t == 0) throw new ArgumentException("a step entry needs at least one token", nameof(tokens));
        if (seq.RewardHead?.Side is not null) throw new InvalidOperationException("mixed steps do not run Otter side networks; use Prefill and Decode for this row");
        if (seq.Exit is not null) throw new InvalidOperationException("mixed steps run every layer; a row with an exit policy decodes with Decode");
        if (seq.Length + t > _model.MaxContext) throw new ArgumentOutOfRangeException(nameof(tokens), $"sequence would reach {seq.Length + t} tokens; the context holds {_model.MaxContext}");
        if (_mixTokens + t > _buf.MaxTokensPerStep) throw new ArgumentOutOfRangeException(nameof(tokens), $"the step would hold {_mixTokens + t} tokens; at most {_buf.MaxTokensPerStep}");
        for (var e = 0; e < _mixEntries; e++)
        {
            if (ReferenceEquals(_mixSeq[e], seq)) throw new InvalidOperationException($"sequence {seq.Id} is already in this step");
        }
        int d = _c.HiddenSize;
        var hidden = _buf.Input(0).Span;
        var positions = _buf.Positions.Span;
        for (var i = 0; i < t; i++)
        {
            _model.Embed(tokens[i], seq.Length + i, hidden.Slice((_mixTokens + i) * d, d));
            positions[_mixTokens + i] = seq.Length + i;
        }
        var entry = _mixEntries++;
        _mixSeq[entry] = seq;
        _mixFirst[entry] = _mixTokens;
        _mixCount[entry] = t;
        _mixTokens += t;
        return entry;
    }

    /// <summary>
    /// Runs the step: every entry's tokens through every block (K/V written at their positions, attention over each row's
    /// own cache, each row's adapter), then the head on each entry's last token. Returns logits [entries, V] in the order
    /// the entries were added (valid until the next step). Rows not added are untouched. Allocates nothing once the
    /// step's token count was seen before.
    /// </summary>
    public ReadOnlySpan<float> RunStep()
    {
        var entries = _mixEntries;
        if (entries == 0) return [];
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        var packed = _packedSteps!;
        int d = _c.HiddenSize, layers = _c.NumLayers;
        var n = PaddedTokens(_mixTokens);
        // Padding tokens (bucketed token counts bound the bindings kept) belong to no row: no K/V, no adapter, zeros out.
        var positions = _buf.Positions.Span;
        for (var i = _mixTokens; i < n; i++) positions[i] = 0;
        _buf.Input(0).Span[(_mixTokens * d)..(n * d)].Clear();

        var plan = packed.KvPlan.Span;
        plan[0] = entries;
        var adapters = false;
        var scored = false;
        for (var e = 0; e < entries; e++)
        {
            var seq = _mixSeq[e]!;
            plan[1 + 4 * e] = seq.Slot;
            plan[2 + 4 * e] = seq.Length;
            plan[3 + 4 * e] = _mixFirst[e];
            plan[4 + 4 * e] = _mixCount[e];
            adapters |= seq.AdapterSlot >= 0;
            scored |= seq.RewardHead is not null;
            for (var i = 0; i < _mixCount[e]; i++) _rowOf[_mixFirst[e] + i] = seq.Slot;
        }
        if (adapters) WriteLoraPlan(packed.LoraPlan!.Span, _rowOf, _mixTokens);
        for (var l = 0; l < layers; l++)
        {
            if (scored) ScoreMixed(l, _buf.Input(l));
            packed.RunBlock(l, n, adapters);
        }
        var final = _buf.Output(layers - 1);
        if (scored) ScoreMixed(layers, final);
        for (var e = 0; e < entries; e++)
        {
            final.Span.Slice((_mixFirst[e] + _mixCount[e] - 1) * d, d).CopyTo(_exitHidden!.Span.Slice(e * d, d));
        }
        var head = _exitHeads[entries] ??= HeadBindings(entries);
        _model.Head.RunWithBinding(_run, head.Head!);
        for (var e = 0; e < entries; e++)
        {
            var seq = _mixSeq[e]!;
            var count = _mixCount[e];
            seq.Length += count;
            seq.PendingToken = -1;
            if (!_mixDecode[e]) continue;
            seq.LastLayers = layers;
            seq.LayersRun += layers;
            seq.TokensDecoded++;
        }
        MixedSteps++;
        MixedStepTokens += _mixTokens;
        var elapsed = System.Diagnostics.Stopwatch.GetTimestamp() - started;
        _decodeTicks += elapsed;
        _mixedTicks += elapsed;
        _mixEntries = 0;
        _mixTokens = 0;
        Array.Clear(_mixSeq, 0, entries);
        return _buf.Logits.Span[..(entries * _c.VocabSize)];
    }

    /// <summary>Mixed steps run (for statistics).</summary>
    public long MixedSteps { get; private set; }

    /// <summary>Tokens (decode and prompt) carried by mixed steps (for statistics).</summary>
    public long MixedStepTokens { get; private set; }

    /// <summary>
    /// The token count a step is run with: exact up to the decoder's capacity (decode-only steps pay no padding), then
    /// rounded up to a multiple of 16, so the bindings kept per count stay few.
    /// </summary>
    private int PaddedTokens(int tokens) =>
        tokens <= Capacity ? tokens : Math.Min(_buf.MaxTokensPerStep, (tokens + 15) / 16 * 16);

    /// <summary>Head-only reward heads reading layer <paramref name="layer"/> score every token of their row in the step (row order, position order).</summary>
    private void ScoreMixed(int layer, NativeBuffer<float> hidden)
    {
        var d = _c.HiddenSize;
        for (var e = 0; e < _mixEntries; e++)
        {
            var seq = _mixSeq[e]!;
            if (seq.RewardHead is not { Side: null } head || head.Layer != layer) continue;
            for (var i = _mixFirst[e]; i < _mixFirst[e] + _mixCount[e]; i++) seq.RewardState.Add(head.Score(hidden.Span.Slice(i * d, d), _rewardScratch));
        }
    }
}
