using Microsoft.ML.OnnxRuntime;
using Serving.Checkpoints;
using Serving.Inference.Graphs;
using Serving.Inference.Runtime;

namespace Serving.Inference.Engine;

/// <summary>
/// A loaded model: the token (and position) embedding applied in managed code, one ONNX Runtime session per
/// transformer block, and one for the head (final norm + LM head). Immutable after load and shared by every
/// <see cref="BatchDecoder"/>; the separate units let callers stop after any layer or read any layer's hidden state.
/// </summary>
public sealed class DecoderModel : IDisposable
{
    private readonly float[] _tokenEmbedding;     // [V, d]
    private readonly float[]? _positionEmbedding; // [P, d] (GPT-2)

    private DecoderModel(ModelConfig config, RuntimeOptions options, int maxContext, float[] tokenEmbedding,
        float[]? positionEmbedding, InferenceSession[] blocks, InferenceSession head, TimeSpan loadTime, (float[], float[]?) finalNorm)
    {
        FinalNorm = finalNorm;
        Config = config;
        Options = options;
        MaxContext = maxContext;
        _tokenEmbedding = tokenEmbedding;
        _positionEmbedding = positionEmbedding;
        Blocks = blocks;
        Head = head;
        LoadTime = loadTime;
    }

    public ModelConfig Config { get; }
    public RuntimeOptions Options { get; }

    /// <summary>Longest sequence a row may reach (options capped by the model's positions).</summary>
    public int MaxContext { get; }

    /// <summary>The final norm's weight (and bias, for GPT-2's LayerNorm), for heads that read normed hidden states.</summary>
    public (float[] Weight, float[]? Bias) FinalNorm { get; }

    /// <summary>Per layer, the norm applied to its input before attention (weight, and bias for GPT-2), for side networks that read it.</summary>
    public IReadOnlyList<(float[] Weight, float[]? Bias)> LayerInputNorms { get; private init; } = [];

    /// <summary>The rotary tables of a Llama-family model (null for GPT-2), shared with side networks.</summary>
    internal RotaryTables? Rotary { get; private init; }

    /// <summary>Session options for further units of this model (side networks): the model's threading and provider.</summary>
    internal SessionOptions CreateSessionOptions() => OrtRuntime.CreateSessionOptions(Options);

    /// <summary>Wall time of graph generation and session creation.</summary>
    public TimeSpan LoadTime { get; }

    internal InferenceSession[] Blocks { get; }
    internal InferenceSession Head { get; }

    /// <summary>Shared initializers, their per-layer session options and the prepacked-weights container (adapter variants).</summary>
    private List<IDisposable> SharedResources { get; init; } = [];

    /// <summary>Per layer, the variant for steps that mix adapters (<see cref="BlockGraph.BatchedGroups"/>; empty when adapters are off).</summary>
    internal InferenceSession[] LoraBatchedBlocks { get; private init; } = [];

    /// <summary>Per layer, the variant for steps whose every token uses one adapter (empty when adapters are off).</summary>
    internal InferenceSession[] LoraDenseBlocks { get; private init; } = [];

    /// <summary>Per layer, the <see cref="BlockGraph.Segmented"/> variant (empty unless <see cref="SegmentedAdapters"/>).</summary>
    internal InferenceSession[] LoraSegmentedBlocks { get; private init; } = [];

    /// <summary>The block sessions of <paramref name="variant"/>.</summary>
    internal InferenceSession[] BlocksOf(BlockVariant variant) => variant switch
    {
        BlockVariant.OneAdapter => LoraDenseBlocks,
        BlockVariant.Batched => LoraBatchedBlocks,
        BlockVariant.Segmented => LoraSegmentedBlocks,
        _ => Blocks,
    };

    /// <summary>Per layer, the packed block (<see cref="RuntimeOptions.PackedSteps"/>; empty otherwise).</summary>
    internal InferenceSession[] PackedBlocks { get; private init; } = [];

    /// <summary>Per layer, the packed block with segmented adapters (packed steps on a model with adapter slots).</summary>
    internal InferenceSession[] PackedSegmentedBlocks { get; private init; } = [];

    /// <summary>Per layer, the K/V-only unit (state propagation for exited tokens).</summary>
    internal InferenceSession[] KvOnlyBlocks { get; private init; } = [];

    /// <summary>Per layer, the K/V-only unit with segmented adapters.</summary>
    internal InferenceSession[] KvOnlySegmentedBlocks { get; private init; } = [];

    private float[]? HeadWeightOrNull { get; init; }

    /// <summary>The LM head's weight [V, d] in managed memory (the tied embedding, or kept for packed steps), for criteria that need logits.</summary>
    public float[] HeadWeight => HeadWeightOrNull ?? throw new InvalidOperationException("the LM head weight is kept only for tied heads or with RuntimeOptions.PackedSteps");

    /// <summary>Per layer, the feed-forward's down projection [ffn, d] (row i = value vector i), kept with packed steps.</summary>
    public IReadOnlyList<float[]> FfnDownWeights { get; private init; } = [];

    /// <summary>Whether packed steps can run (<see cref="RuntimeOptions.PackedSteps"/>).</summary>
    public bool SupportsPackedSteps => PackedBlocks.Length > 0;

    /// <summary>Bytes the graphs' projection weights take in <see cref="RuntimeOptions.Weights"/>' format and <see cref="RuntimeOptions.Precision"/> (all layers; one copy).</summary>
    public long ProjectionWeightBytes { get; private init; }

    /// <summary>Bytes of the LM head as the head graph holds it (quantised with <see cref="RuntimeOptions.QuantizeHead"/>, fp16 with <see cref="ComputePrecision.Float16"/>).</summary>
    public long HeadWeightBytes { get; private init; }

    /// <summary>Whether adapter steps run the segmented operator (<see cref="RuntimeOptions.UsesSegmentedAdapters"/>).</summary>
    internal bool SegmentedAdapters => LoraSegmentedBlocks.Length > 0;

    /// <summary>Adapter slots this model was built for (<see cref="RuntimeOptions.AdapterSlots"/>).</summary>
    public int AdapterSlots => Options.AdapterSlots;

    /// <summary>Every block in one session (<see cref="RuntimeOptions.FusedDecode"/>), sharing the blocks' weights; null when not built.</summary>
    internal InferenceSession? FusedBlocks { get; private init; }

    /// <summary>Whether decode steps of base-model rows can run every block in one session (<see cref="RuntimeOptions.FusedDecode"/>).</summary>
    public bool SupportsFusedDecode => FusedBlocks is not null;

    /// <summary>Loads a Hugging Face checkpoint folder and builds its graphs in memory.</summary>
    public static DecoderModel Load(string checkpointDirectory, RuntimeOptions? options = null)
    {
        using var ckpt = CheckpointFolder.Open(checkpointDirectory);
        return Load(ckpt, options ?? new RuntimeOptions());
    }

    /// <summary>Builds the graphs of an opened checkpoint.</summary>
    public static DecoderModel Load(CheckpointFolder ckpt, RuntimeOptions options)
    {
        options.Validate();
        var started = System.Diagnostics.Stopwatch.StartNew();
        var c = ckpt.Config;
        var maxContext = Math.Min(options.MaxContext, c.MaxPositions);
        long d = c.HiddenSize, v = c.VocabSize;
        var gpt2 = c.Architecture == ModelArchitecture.Gpt2;

        var embedName = gpt2 ? "transformer.wte.weight" : "model.embed_tokens.weight";
        var tokenEmbedding = ckpt.ReadFloat32(embedName, v, d);
        var positionEmbedding = gpt2 ? ckpt.ReadFloat32("transformer.wpe.weight", c.MaxPositions, d) : null;
        var rotary = gpt2 ? null : new RotaryTables(c, maxContext);

        var sessions = new List<InferenceSession>();
        var inputNorms = new (float[], float[]?)[c.NumLayers];
        var ffnDown = new float[c.NumLayers][];
        var adapters = options.AdapterSlots > 0;
        var segmented = adapters && options.UsesSegmentedAdapters;
        var batchedBlocks = adapters && !segmented ? new InferenceSession[c.NumLayers] : [];
        var denseBlocks = adapters && !segmented ? new InferenceSession[c.NumLayers] : [];
        var segmentedBlocks = segmented ? new InferenceSession[c.NumLayers] : [];
        var packed = options.PackedSteps;
        var packedBlocks = packed ? new InferenceSession[c.NumLayers] : [];
        var packedSegmentedBlocks = packed && segmented ? new InferenceSession[c.NumLayers] : [];
        var kvOnly = packed ? new InferenceSession[c.NumLayers] : [];
        var kvOnlySegmented = packed && segmented ? new InferenceSession[c.NumLayers] : [];
        var shared = new List<IDisposable>();
        // fp16 blocks and head (RuntimeOptions.Precision): converted after building, fp32 at the engine's boundaries (K/V fp16).
        var half = options.Precision == ComputePrecision.Float16;
        var weightBytes = half ? 2 : sizeof(float); // per unquantised weight
        byte[] Precise(byte[] graph) => half ? Float16Graph.Convert(graph, Float16Graph.EngineBoundary) : graph;
        (byte[], List<(string, Array, long[])>) PreciseShared((byte[] Model, List<(string Name, Array Values, long[] Dims)> Shared) built) =>
            half ? Float16Graph.Convert(built, Float16Graph.EngineBoundary, inlineShared: options.ExecutionProvider == ExecutionProviderKind.Cpu) : built;
        // fp32 on the CPU provider: LayerNorm models' residual + norm through the C# operator (BlockGraph.SkipNorm).
        var cpuNorm = !half && options.ExecutionProvider == ExecutionProviderKind.Cpu;
        long projectionBytes = 0;
        // Profiling writes one trace per session options: the fused session would mix into the blocks' (and measure another step).
        var fusedDecode = options.FusedDecode && !OrtRuntime.Profiling;
        var layerWeights = fusedDecode ? new LayerWeights[c.NumLayers] : null;
        try
        {
            using var so = OrtRuntime.CreateSessionOptions(options);
            PrePackedWeightsContainer? prepacked = null;
            if (adapters || packed || fusedDecode)
            {
                prepacked = new PrePackedWeightsContainer();
                shared.Add(prepacked);
            }
            for (var layer = 0; layer < c.NumLayers; layer++)
            {
                var weights = LayerWeights.Read(ckpt, layer);
                weights.Quantize(c, options.Weights, options.WeightBlockSize, options.WeightAccuracyLevel);
                projectionBytes += weights.Quantized?.Bytes
                    ?? weightBytes * ((long)weights.QkvWeight.Length + weights.OutWeight.Length + weights.UpWeight.Length + weights.DownWeight.Length);
                inputNorms[layer] = (weights.Norm1Weight, weights.Norm1Bias);
                if (layerWeights is not null) layerWeights[layer] = weights;
                ffnDown[layer] = weights.DownWeight;
                if (prepacked is null)
                {
                    if (OrtRuntime.Profiling)
                    {
                        using var own = OrtRuntime.CreateSessionOptions(options); // one profile file per session
                        sessions.Add(new InferenceSession(Dump(Precise(BlockGraph.Build(c, weights, layer, maxContext, rotary, 0, shareWeights: false, cpuNorm: cpuNorm).Model), $"block_{layer}"), own));
                        continue;
                    }
                    sessions.Add(new InferenceSession(Dump(Precise(BlockGraph.Build(c, weights, layer, maxContext, rotary, 0, shareWeights: false, cpuNorm: cpuNorm).Model), $"block_{layer}"), so));
                    continue;
                }
                // With adapter variants, every session of this layer reads one copy of its projection weights
                // (AddInitializer) and one packed copy (the shared container): a variant costs ~1 MB, not a layer.
                var (baseGraph, sharedWeights) = PreciseShared(BlockGraph.Build(c, weights, layer, maxContext, rotary, 0, shareWeights: true, cpuNorm: cpuNorm));
                var layerOptions = OrtRuntime.CreateSessionOptions(options);
                shared.Add(layerOptions);
                if (segmented) Adapters.SegmentedLoraOp.Register(layerOptions);
                if (packed) Attention.SlotAttentionOp.Register(layerOptions);
                AddSharedWeights(layerOptions, sharedWeights, shared);
                sessions.Add(new InferenceSession(Dump(baseGraph, $"block_{layer}"), layerOptions, prepacked));
                if (packed)
                {
                    // Side units beside the layer's own (not in `sessions`, whose order maps layers to base blocks).
                    packedBlocks[layer] = new InferenceSession(Dump(BlockGraph.Build(c, weights, layer, maxContext, rotary, 0, shareWeights: true, packed: true, cpuNorm: cpuNorm).Model, $"block_{layer}_packed"), layerOptions, prepacked);
                    shared.Add(packedBlocks[layer]);
                    kvOnly[layer] = new InferenceSession(Dump(KvOnlyGraph.Build(c, weights, layer, rotary, segmented: false).Model, $"kv_only_{layer}"), layerOptions, prepacked);
                    shared.Add(kvOnly[layer]);
                    if (segmented)
                    {
                        packedSegmentedBlocks[layer] = new InferenceSession(Dump(BlockGraph.Build(c, weights, layer, maxContext, rotary, BlockGraph.Segmented, shareWeights: true, packed: true, cpuNorm: cpuNorm).Model, $"block_{layer}_packed_lora_segmented"), layerOptions, prepacked);
                        shared.Add(packedSegmentedBlocks[layer]);
                        kvOnlySegmented[layer] = new InferenceSession(Dump(KvOnlyGraph.Build(c, weights, layer, rotary, segmented: true).Model, $"kv_only_{layer}_lora_segmented"), layerOptions, prepacked);
                        shared.Add(kvOnlySegmented[layer]);
                    }
                }
                if (!adapters)
                {
                    TrimNativeHeap();
                    continue;
                }
                if (segmented)
                {
                    var (variant, _) = BlockGraph.Build(c, weights, layer, maxContext, rotary, BlockGraph.Segmented, shareWeights: true, cpuNorm: cpuNorm);
                    segmentedBlocks[layer] = new InferenceSession(Dump(variant, $"block_{layer}_lora_segmented"), layerOptions, prepacked);
                    sessions.Add(segmentedBlocks[layer]);
                    TrimNativeHeap();
                    continue;
                }
                var (batched, _) = PreciseShared(BlockGraph.Build(c, weights, layer, maxContext, rotary, BlockGraph.BatchedGroups, shareWeights: true, cpuNorm: cpuNorm));
                batchedBlocks[layer] = new InferenceSession(Dump(batched, $"block_{layer}_lora_batched"), layerOptions, prepacked);
                sessions.Add(batchedBlocks[layer]);
                var (dense, _) = PreciseShared(BlockGraph.Build(c, weights, layer, maxContext, rotary, BlockGraph.AllTokensOneAdapter, shareWeights: true, cpuNorm: cpuNorm));
                denseBlocks[layer] = new InferenceSession(Dump(dense, $"block_{layer}_lora_all"), layerOptions, prepacked);
                sessions.Add(denseBlocks[layer]);
                TrimNativeHeap();
            }
            var normW = gpt2 ? ckpt.ReadFloat32("transformer.ln_f.weight", d) : LayerWeights.ReadNorm(ckpt, c, "model.norm.weight", (int)d);
            var normB = gpt2 ? ckpt.ReadFloat32("transformer.ln_f.bias", d) : null;
            var headW = c.TieWordEmbeddings || !ckpt.Contains("lm_head.weight")
                ? tokenEmbedding
                : ckpt.ReadFloat32("lm_head.weight", v, d);
            if (!c.TieWordEmbeddings && ReferenceEquals(headW, tokenEmbedding) && !gpt2)
            {
                throw new SafetensorsFormatException(ckpt.Directory, "lm_head.weight", "missing tensor (config says the head is not tied)");
            }
            var headQuantized = options.QuantizeHead
                ? WeightQuantizer.Quantize(headW, (int)d, (int)v, options.Weights, options.WeightBlockSize, transposed: true)
                : null;
            // fp16 blocks get an fp16 head (half the LM head's bytes: a third of a small model's step); rows in and logits out stay fp32.
            var headGraph = HeadGraph.Build(c, normW, normB, headW, headQuantized, options.WeightAccuracyLevel);
            var head = new InferenceSession(Dump(half ? Float16Graph.Convert(headGraph, Float16Graph.HeadBoundary) : headGraph, "head"), so);
            sessions.Add(head);
            var fused = layerWeights is not null && projectionBytes <= RuntimeOptions.FusedDecodeMaxWeightBytes
                ? FusedBlocksSession(c, layerWeights, maxContext, rotary, options, prepacked!, shared)
                : null;
            var blocks = new InferenceSession[c.NumLayers];
            var perLayer = segmented ? 2 : adapters ? 3 : 1; // base (+ segmented | + batched, all-one-adapter)
            for (var layer = 0; layer < c.NumLayers; layer++) blocks[layer] = sessions[layer * perLayer];
            return new DecoderModel(c, options, maxContext, tokenEmbedding, positionEmbedding, blocks, head, started.Elapsed, (normW, normB))
            {
                FusedBlocks = fused,
                LoraBatchedBlocks = batchedBlocks,
                LoraDenseBlocks = denseBlocks,
                LoraSegmentedBlocks = segmentedBlocks,
                SharedResources = shared,
                LayerInputNorms = inputNorms,
                PackedBlocks = packedBlocks,
                HeadWeightOrNull = ReferenceEquals(headW, tokenEmbedding) || packed ? headW : null,
                FfnDownWeights = packed ? ffnDown : [],
                PackedSegmentedBlocks = packedSegmentedBlocks,
                KvOnlyBlocks = kvOnly,
                KvOnlySegmentedBlocks = kvOnlySegmented,
                Rotary = rotary,
                ProjectionWeightBytes = projectionBytes,
                HeadWeightBytes = headQuantized?.Bytes ?? weightBytes * headW.LongLength,
            };
        }
        catch
        {
            foreach (var s in sessions) s.Dispose();
            foreach (var item in shared) item.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The fused blocks' session: the graph's projection weights are placeholders, supplied here from the same managed
    /// arrays the per-layer sessions read (pinned, not copied) and packed once through the shared container.
    /// </summary>
    private static InferenceSession FusedBlocksSession(ModelConfig c, LayerWeights[] layers, int maxContext, RotaryTables? rotary,
        RuntimeOptions options, PrePackedWeightsContainer prepacked, List<IDisposable> shared)
    {
        var (graph, sharedWeights) = FusedGraph.Build(c, layers, maxContext, rotary,
            cpuNorm: options.Precision != ComputePrecision.Float16 && options.ExecutionProvider == ExecutionProviderKind.Cpu);
        var fusedOptions = OrtRuntime.CreateSessionOptions(options);
        shared.Add(fusedOptions);
        AddSharedWeights(fusedOptions, sharedWeights, shared);
        var session = new InferenceSession(Dump(graph, "fused_blocks"), fusedOptions, prepacked);
        shared.Add(session);
        TrimNativeHeap();
        return session;
    }

    /// <summary>Supplies a graph's shared-weight placeholders from their managed arrays (pinned, not copied); the values are kept in <paramref name="shared"/>.</summary>
    private static void AddSharedWeights(SessionOptions sessionOptions, List<(string Name, Array Values, long[] Dims)> weights, List<IDisposable> shared)
    {
        foreach (var (name, values, dims) in weights)
        {
            var value = values switch
            {
                float[] floats => OrtValue.CreateTensorValueFromMemory(floats, dims),
                Half[] halves => OrtValue.CreateTensorValueFromMemory(Float16Graph.ToOrt(halves), dims),
                byte[] bytes => OrtValue.CreateTensorValueFromMemory(bytes, dims),
                _ => throw new InvalidOperationException($"shared weight '{name}' of type {values.GetType()}"),
            };
            shared.Add(value);
            sessionOptions.AddInitializer(name, value);
        }
    }

    /// <summary>
    /// Returns freed native heap to the OS: building a session parses the full-size zero placeholders, and glibc keeps
    /// those pages otherwise (RSS would grow by a layer's weights per variant although nothing holds them).
    /// </summary>
    private static void TrimNativeHeap()
    {
        if (OperatingSystem.IsLinux())
        {
            try
            {
                _ = MallocTrim(0);
            }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
            {
                // Not glibc (e.g. musl): nothing to trim.
            }
        }
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "malloc_trim")]
    private static extern int MallocTrim(nuint pad);

    /// <summary>With SERVING_DUMP_GRAPHS=folder set, writes each generated graph there as .onnx (for Netron or debugging).</summary>
    private static byte[] Dump(byte[] model, string name)
    {
        var folder = Environment.GetEnvironmentVariable("SERVING_DUMP_GRAPHS");
        if (!string.IsNullOrEmpty(folder))
        {
            Directory.CreateDirectory(folder);
            File.WriteAllBytes(Path.Combine(folder, name + ".onnx"), model);
        }
        return model;
    }

    /// <summary>Writes the embedding of <paramref name="token"/> at <paramref name="position"/> into <paramref name="destination"/> [d].</summary>
    public void Embed(int token, int position, Span<float> destination)
    {
        var d = Config.HiddenSize;
        if ((uint)token >= (uint)Config.VocabSize)
        {
            throw new ArgumentOutOfRangeException(nameof(token), token, $"token id outside the vocabulary [0, {Config.VocabSize})");
        }
        var row = _tokenEmbedding.AsSpan(token * d, d);
        if (Config.EmbeddingScale is { } scale)
        {
            System.Numerics.Tensors.TensorPrimitives.Multiply(row, scale, destination); // Gemma: × √d in fp32
        }
        else if (_positionEmbedding is null)
        {
            row.CopyTo(destination);
        }
        else
        {
            System.Numerics.Tensors.TensorPrimitives.Add(row, _positionEmbedding.AsSpan(position * d, d), destination);
        }
    }

    public void Dispose()
    {
        foreach (var b in Blocks) b.Dispose();
        foreach (var b in LoraBatchedBlocks) b.Dispose();
        foreach (var b in LoraDenseBlocks) b.Dispose();
        foreach (var b in LoraSegmentedBlocks) b.Dispose();
        Head.Dispose();
        for (var i = SharedResources.Count - 1; i >= 0; i--) SharedResources[i].Dispose();
    }
}
