using Serving.Inference.EarlyExit;
using Serving.Inference.Runtime;

namespace Serving.Inference.Engine;

// Packed decode steps (a model loaded with RuntimeOptions.PackedSteps): every step runs the packed blocks, so rows may
// leave the step between blocks (early exit); exited rows get their skipped layers' K/V by state propagation.
public sealed partial class BatchDecoder
{
    private PackedSteps? _packedSteps;
    private int[] _exitLayer = [];
    private int[] _rowOf = [];
    private int[] _kvRowOf = [];
    private int[] _exitState = [];
    private int _exitStateStride;
    private float[] _exitScratch = [];
    private NativeBuffer<float>? _exitHidden;
    private StepBindings?[] _exitHeads = [];

    /// <summary>
    /// Lets <paramref name="seq"/> leave decode steps early (null: never): after each block its tokens are tested with
    /// the policy's criterion and leave at the first block where the confidence reaches the threshold; their logits come
    /// from the head on that hidden state, and the skipped layers' K/V from state propagation. Needs a model loaded
    /// with <see cref="RuntimeOptions.PackedSteps"/>. Forks inherit the policy.
    /// </summary>
    public void SetExitPolicy(Sequence seq, ExitPolicy? policy)
    {
        EnsureActive(seq);
        if (policy is not null)
        {
            if (_packedSteps is null) throw new InvalidOperationException("early exit needs a model loaded with RuntimeOptions.PackedSteps");
            if (seq.RewardHead?.Side is not null) throw new InvalidOperationException("early exit and an Otter side network do not run together (the side network reads the inputs of its base layers, which an exited row skips)");
            var state = policy.Criterion.StateSize;
            if (state > _exitStateStride)
            {
                _exitStateStride = state;
                _exitState = new int[Capacity * state];
            }
            if (policy.Criterion.ScratchSize > _exitScratch.Length) _exitScratch = new float[policy.Criterion.ScratchSize];
        }
        seq.Exit = policy;
    }

    private void InitPacked()
    {
        if (!_model.SupportsPackedSteps) return;
        _packedSteps = new PackedSteps(_buf, Adapters, Capacity, _run);
        _exitLayer = new int[Capacity];
        _rowOf = new int[_buf.MaxTokensPerStep];
        _kvRowOf = new int[Capacity];
        _exitHidden = new NativeBuffer<float>((long)Capacity * _c.HiddenSize);
        _exitHeads = new StepBindings?[Capacity + 1];
    }

    /// <summary>
    /// One decode step through the packed blocks (the embeddings, positions and adapter groups are in place): blocks run
    /// on the rows still in the step, rows leave by their exit policy, exited rows' skipped layers get propagated K/V,
    /// and the head runs once on every row's last hidden state.
    /// </summary>
    private void DecodePacked(int b)
    {
        var packed = _packedSteps!;
        int d = _c.HiddenSize, layers = _c.NumLayers;
        var scored = AnyRewardHead(b);
        if (_stepSides.Count > 0) throw new InvalidOperationException("packed steps do not run Otter side networks");
        var adapters = (_groups?.Count ?? 0) > 0;
        var n = b;
        for (var i = 0; i < b; i++)
        {
            _rowOf[i] = i;
            _exitLayer[i] = layers;
            if (_active[i].Exit is not null && _exitStateStride > 0) Array.Clear(_exitState, i * _exitStateStride, _exitStateStride);
        }
        var positions = _buf.Positions.Span;
        for (var l = 0; l < layers && n > 0; l++)
        {
            WriteKvPlan(packed.KvPlan.Span, n);
            if (adapters) WriteLoraPlan(packed.LoraPlan!.Span, _rowOf, n);
            if (scored) ScorePacked(l, _buf.Input(l), n);
            packed.RunBlock(l, n, adapters);
            var output = _buf.Output(l).Span;
            if (l == layers - 1)
            {
                for (var i = 0; i < n; i++) output.Slice(i * d, d).CopyTo(_exitHidden!.Span.Slice(_rowOf[i] * d, d));
                break;
            }
            var input = _buf.Input(l).Span;
            var m = 0;
            for (var i = 0; i < n; i++)
            {
                var r = _rowOf[i];
                if (Exits(_active[r], r, l + 1, output.Slice(i * d, d), input.Slice(i * d, d), packed.Ffn.Span.Slice(i * _c.IntermediateSize, _c.IntermediateSize)))
                {
                    output.Slice(i * d, d).CopyTo(_exitHidden!.Span.Slice(r * d, d));
                    _exitLayer[r] = l + 1;
                    continue;
                }
                if (m != i)
                {
                    output.Slice(i * d, d).CopyTo(output.Slice(m * d, d));
                    positions[m] = positions[i];
                    _rowOf[m] = r;
                }
                m++;
            }
            n = m;
        }
        if (scored) ScoreExited(b);
        PropagateKv(b);
        var head = _exitHeads[b] ??= HeadBindings(b);
        _model.Head.RunWithBinding(_run, head.Head!);
        for (var r = 0; r < b; r++)
        {
            var seq = _active[r];
            seq.LastLayers = _exitLayer[r];
            seq.LayersRun += _exitLayer[r];
            seq.TokensDecoded++;
        }
    }

    private bool Exits(Sequence seq, int r, int layer, ReadOnlySpan<float> hidden, ReadOnlySpan<float> previous, ReadOnlySpan<float> ffn)
    {
        if (seq.Exit is not { } policy) return false;
        var view = new ExitView
        {
            Layer = layer,
            Hidden = hidden,
            Previous = previous,
            Ffn = ffn,
            State = _exitState.AsSpan(r * _exitStateStride, policy.Criterion.StateSize),
            Scratch = _exitScratch,
        };
        return policy.Criterion.Confidence(ref view) >= policy.Threshold;
    }

    /// <summary>One attention row per packed token: (slot, position, token, 1).</summary>
    private void WriteKvPlan(Span<long> plan, int n)
    {
        plan[0] = n;
        for (var i = 0; i < n; i++)
        {
            var seq = _active[_rowOf[i]];
            plan[1 + 4 * i] = seq.Slot;
            plan[2 + 4 * i] = seq.Length;
            plan[3 + 4 * i] = i;
            plan[4 + 4 * i] = 1;
        }
    }

    /// <summary>The segmented operator's plan over packed tokens whose rows are <paramref name="rows"/>[0, n): one segment per adapter.</summary>
    private void WriteLoraPlan(Span<long> plan, int[] rows, int n)
    {
        var table = Adapters!;
        var groups = 0;
        // Pass 1: distinct slots in order of first appearance, with their token counts (in the groups' scratch).
        var slots = _groups!.Slots;
        var fill = _groups.Fill;
        for (var i = 0; i < n; i++)
        {
            var slot = _active[rows[i]].AdapterSlot;
            if (slot < 0) continue;
            var g = 0;
            while (g < groups && slots[g] != slot) g++;
            if (g == groups)
            {
                slots[groups] = slot;
                fill[groups++] = 0;
            }
            fill[g]++;
        }
        plan[0] = groups;
        var start = 0;
        for (var g = 0; g < groups; g++)
        {
            plan[1 + 3 * g] = table.PositionOf(slots[g]);
            plan[2 + 3 * g] = start;
            plan[3 + 3 * g] = fill[g];
            var count = fill[g];
            fill[g] = start;
            start += count;
        }
        var order = plan[(1 + 3 * groups)..];
        for (var i = 0; i < n; i++)
        {
            var slot = _active[rows[i]].AdapterSlot;
            if (slot < 0) continue;
            var g = 0;
            while (slots[g] != slot) g++;
            order[fill[g]++] = i;
        }
    }

    /// <summary>Reward heads reading layer <paramref name="layer"/>, on the packed rows still in the step.</summary>
    private void ScorePacked(int layer, NativeBuffer<float> hidden, int n)
    {
        var d = _c.HiddenSize;
        for (var i = 0; i < n; i++)
        {
            var seq = _active[_rowOf[i]];
            if (seq.RewardHead is { Side: null } head && head.Layer == layer) seq.RewardState.Add(head.Score(hidden.Span.Slice(i * d, d), _rewardScratch));
        }
    }

    /// <summary>Heads reading a layer the row skipped (or the last) see the row's last hidden state: the state the skipped layers were propagated from.</summary>
    private void ScoreExited(int b)
    {
        var d = _c.HiddenSize;
        for (var r = 0; r < b; r++)
        {
            var seq = _active[r];
            if (seq.RewardHead is { Side: null } head && head.Layer >= _exitLayer[r]) seq.RewardState.Add(head.Score(_exitHidden!.Span.Slice(r * d, d), _rewardScratch));
        }
    }

    /// <summary>
    /// State propagation (CALM): for every block a row skipped, the K/V that block would write for the row's exit hidden
    /// state, from the block's own input norm and K/V projections (and the row's adapter), batched per block.
    /// </summary>
    private void PropagateKv(int b)
    {
        var packed = _packedSteps!;
        var d = _c.HiddenSize;
        for (var l = 1; l < _c.NumLayers; l++)
        {
            var m = 0;
            var adapters = false;
            for (var r = 0; r < b; r++)
            {
                if (_exitLayer[r] > l || _active[r].Exit is { Propagate: false }) continue;
                _exitHidden!.Span.Slice(r * d, d).CopyTo(packed.KvHidden.Span.Slice(m * d, d));
                packed.KvPositions.Span[m] = _active[r].Length;
                adapters |= _active[r].AdapterSlot >= 0;
                _kvRowOf[m++] = r;
            }
            if (m == 0) continue;
            if (adapters) WriteLoraPlan(packed.KvLoraPlan!.Span, _kvRowOf, m);
            packed.RunKvOnly(l, m, adapters);
            for (var i = 0; i < m; i++)
            {
                var seq = _active[_kvRowOf[i]];
                packed.Store(l, i, seq.Slot, seq.Length);
            }
        }
    }

    private NativeBuffer<float>? _verifyLogits;
    private readonly Dictionary<int, StepBindings> _verifyHeads = [];

    /// <summary>
    /// Copies the hidden state <paramref name="seq"/>'s last decoded token left the step with (its exit layer's, or the
    /// last block's) into <paramref name="destination"/> [d]: what self-speculative drafts keep for verification.
    /// </summary>
    public void CopyLastHidden(Sequence seq, Span<float> destination)
    {
        EnsureActive(seq);
        if (_exitHidden is null) throw new InvalidOperationException("the last hidden state is kept by packed steps only (RuntimeOptions.PackedSteps)");
        _exitHidden.Span.Slice(seq.Slot * _c.HiddenSize, _c.HiddenSize).CopyTo(destination);
    }

    /// <summary>
    /// Self-speculative verification: runs blocks [<paramref name="fromLayer"/>, L) for the last <paramref name="tokens"/>
    /// cached tokens of <paramref name="seq"/> in one packed pass, starting from their hidden states at
    /// <paramref name="fromLayer"/> (<paramref name="hidden"/> [tokens, d], kept by the drafts, whose own pass already
    /// wrote the K/V of the blocks before), writes those blocks' K/V and returns the full model's logits at each of the
    /// positions [tokens, V] (valid until the next verification).
    /// </summary>
    public ReadOnlySpan<float> Verify(Sequence seq, ReadOnlySpan<float> hidden, int fromLayer, int tokens)
    {
        EnsureActive(seq);
        var packed = _packedSteps ?? throw new InvalidOperationException("verification needs a model loaded with RuntimeOptions.PackedSteps");
        int d = _c.HiddenSize, v = _c.VocabSize;
        if (tokens < 1 || tokens > seq.Length || hidden.Length != tokens * d) throw new ArgumentException($"verify 1..{seq.Length} cached tokens with [tokens, {d}] hidden states");
        if ((uint)fromLayer >= (uint)_c.NumLayers) throw new ArgumentOutOfRangeException(nameof(fromLayer), fromLayer, $"blocks are [0, {_c.NumLayers})");
        var start = seq.Length - tokens;
        hidden.CopyTo(_buf.Input(fromLayer).Span);
        for (var i = 0; i < tokens; i++) _buf.Positions.Span[i] = start + i;
        var plan = packed.KvPlan.Span;
        plan[0] = 1;
        plan[1] = seq.Slot;
        plan[2] = start;
        plan[3] = 0;
        plan[4] = tokens;
        var adapters = seq.AdapterSlot >= 0;
        if (adapters)
        {
            var lora = packed.LoraPlan!.Span;
            lora[0] = 1;
            lora[1] = Adapters!.PositionOf(seq.AdapterSlot);
            lora[2] = 0;
            lora[3] = tokens;
            for (var i = 0; i < tokens; i++) lora[4 + i] = i;
        }
        for (var l = fromLayer; l < _c.NumLayers; l++) packed.RunBlock(l, tokens, adapters);
        _verifyLogits ??= new NativeBuffer<float>((long)_buf.MaxTokensPerStep * v);
        if (!_verifyHeads.TryGetValue(tokens, out var head))
        {
            head = StepBindings.Empty(0);
            var io = head.Own(_model.Head.CreateIoBinding());
            io.BindInput(Graphs.HeadGraph.Hidden, head.Own(_buf.Output(_c.NumLayers - 1).View(0, tokens, d)));
            io.BindOutput(Graphs.HeadGraph.Logits, head.Own(_verifyLogits.View(0, tokens, v)));
            head.Head = io;
            _verifyHeads[tokens] = head;
        }
        _model.Head.RunWithBinding(_run, head.Head!);
        return _verifyLogits.Span[..(tokens * v)];
    }

    /// <summary>Forgets the cached tokens of <paramref name="seq"/> from <paramref name="length"/> on (rejected speculative drafts); their slots are overwritten later.</summary>
    public void Truncate(Sequence seq, int length)
    {
        EnsureActive(seq);
        if (length < 0 || length > seq.Length) throw new ArgumentOutOfRangeException(nameof(length), length, $"the sequence holds {seq.Length} tokens");
        seq.Length = length;
    }

    /// <summary>The head on the rows' last hidden states [b, d] → logits [b, V].</summary>
    private StepBindings HeadBindings(int b)
    {
        var step = StepBindings.Empty(0);
        var io = step.Own(_model.Head.CreateIoBinding());
        io.BindInput(Graphs.HeadGraph.Hidden, step.Own(_exitHidden!.View(0, b, _c.HiddenSize)));
        io.BindOutput(Graphs.HeadGraph.Logits, step.Own(_buf.Logits.View(0, b, _c.VocabSize)));
        step.Head = io;
        return step;
    }
}
