namespace Serving.Inference.Runtime;

/// <summary>Which ONNX Runtime execution provider runs the graphs.</summary>
public enum ExecutionProviderKind
{
    Cpu,

    /// <summary>CUDA; needs a build with <c>-p:UseCuda=true</c> (Microsoft.ML.OnnxRuntime.Gpu) and CUDA 13 + cuDNN 9.</summary>
    Cuda,
}

/// <summary>How adapter updates are computed in the graphs (see docs/engine.md, "Adapters").</summary>
public enum AdapterKernelKind
{
    /// <summary><see cref="Segmented"/> on the CPU provider, <see cref="BatchedMatMul"/> on CUDA.</summary>
    Auto,

    /// <summary>
    /// One <c>serving.lora::SegmentedLora</c> custom operator per projection (CPU only): reads each adapter of a step
    /// once at its own rank, straight from the slots; one block variant serves prefills, one-adapter and mixed steps.
    /// </summary>
    Segmented,

    /// <summary>
    /// Stock ONNX operators only (any provider): an all-tokens-one-adapter variant (FusedMatMul + MatMul + Add) and a
    /// batched variant that gathers a mixed step's tokens into a padded [G, T] grid over compacted slots.
    /// </summary>
    BatchedMatMul,
}

/// <summary>How a model is loaded and run.</summary>
public sealed record RuntimeOptions
{
    /// <summary>Execution provider (CPU by default).</summary>
    public ExecutionProviderKind ExecutionProvider { get; init; } = ExecutionProviderKind.Cpu;

    /// <summary>CUDA device ordinal.</summary>
    public int DeviceId { get; init; }

    /// <summary>Threads of the one global intra-op pool (0 = processor count).</summary>
    public int Threads { get; init; }

    /// <summary>
    /// Whether idle threads of the global pool spin (process-wide, fixed by the first model loaded). On: best for a
    /// process that only decodes. Off: leaves CPU to other work in the process (HTTP serving on a small machine).
    /// </summary>
    public bool SpinThreads { get; init; } = true;

    /// <summary>Rows that decode together (KV slots).</summary>
    public int MaxBatch { get; init; } = 8;

    /// <summary>Longest sequence (prompt + output) per row; capped by the model's positions.</summary>
    public int MaxContext { get; init; } = 512;

    /// <summary>
    /// Most tokens one engine step may carry (a decode's rows, a prefill's prompt tokens, or a mixed step's decode rows
    /// and prompt chunks together); the step buffers are sized for it. 0: the decoder's capacity (<see cref="MaxBatch"/>
    /// by default) or <see cref="MaxContext"/>, whichever is larger. Set it to at least the scheduler's mixed-step budget
    /// (<c>SchedulerOptions.MaxTokensPerStep</c>; the node does): a scheduler whose budget the buffers cannot hold is
    /// refused.
    /// </summary>
    public int MaxStepTokens { get; init; }

    /// <summary>
    /// Also build every block as one graph that decode steps of base-model rows run through instead of one session per
    /// layer (<see cref="Engine.BatchDecoder.UseFusedDecode"/>): one <c>Run</c> per step instead of one per layer. The
    /// graph reads the per-layer sessions' weights (<c>AddInitializer</c>) and their packed copies (the shared
    /// <c>PrePackedWeightsContainer</c>), so it adds no resident weight memory, but building it parses a protobuf as
    /// large as the projection weights (skipped above <see cref="FusedDecodeMaxWeightBytes"/>, and while profiling).
    /// Off by default: on gpt2-small it measured 0.5–1.7% faster at batch 1 and the same at 8 and 32 (docs/benchmarks.md),
    /// not worth the load time; it is the measurement of what the per-layer split costs. Steps with adapter rows, reward
    /// heads or exit policies always run the per-layer units (they need per-layer inputs or hooks).
    /// </summary>
    public bool FusedDecode { get; init; }

    /// <summary>Largest projection-weight size (bytes, in <see cref="Weights"/>' format) for which <see cref="FusedDecode"/> builds its graph.</summary>
    public const long FusedDecodeMaxWeightBytes = 1L << 30;

    /// <summary>
    /// Adapter slots S: how many distinct adapters one step can mix (0 = the model serves the base only). Each block
    /// is then also built in adapter variants (<see cref="AdapterKernel"/>: one segmented variant, or one adapter on
    /// every token plus a batched mix of up to S adapters). All
    /// sessions of a layer share one copy of its projection weights (AddInitializer) and one packed copy
    /// (PrePackedWeightsContainer). Each decoder reserves S slots of <see cref="AdapterMaxRank"/> capacity
    /// (<see cref="Adapters.AdapterSlotTable"/>): gpt2-small at rank 16 is 9.4 MB per slot.
    /// </summary>
    public int AdapterSlots { get; init; }

    /// <summary>
    /// Largest LoRA rank a slot accepts per module (fused projections take the sum of their parts). Steps that mix
    /// adapters compute and read every slot at this rank (lower ranks are zero-padded, as vLLM's <c>max_lora_rank</c>),
    /// so set it to the largest rank you serve, not higher.
    /// </summary>
    public int AdapterMaxRank { get; init; } = 64;

    /// <summary>
    /// Also build packed blocks (attention through the C# <see cref="Attention.SlotAttentionOp"/> over the whole cache, so a
    /// step may run any subset of rows at any positions, several tokens per row) and per-layer K/V-only units: what early
    /// exit (compacting the rows still running, propagating exited rows' K/V) and self-speculative verification run on.
    /// CPU provider only; the ordinary decode path is unchanged.
    /// </summary>
    public bool PackedSteps { get; init; }

    /// <summary>How adapter updates are computed (<see cref="AdapterKernelKind.Auto"/>: segmented on CPU).</summary>
    public AdapterKernelKind AdapterKernel { get; init; }

    /// <summary>Whether adapters use the <see cref="AdapterKernelKind.Segmented"/> operator with these options.</summary>
    public bool UsesSegmentedAdapters => AdapterKernel switch
    {
        AdapterKernelKind.Segmented => true,
        AdapterKernelKind.BatchedMatMul => false,
        _ => ExecutionProvider == ExecutionProviderKind.Cpu && Precision == ComputePrecision.Float32,
    };

    /// <summary>
    /// The blocks' arithmetic (<see cref="Graphs.Float16Graph"/>): fp32, or fp16 weights, activations and K/V cache —
    /// what the CUDA provider needs (its <c>GroupQueryAttention</c> takes fp16/bf16 only) and half the bytes per step.
    /// The blocks and the head (final norm and LM head, a second fp16 copy of a tied embedding) keep fp32 boundaries
    /// (hidden state in and out, logits out, adapter factors; cast inside the graph), so the embedding rows, the logits
    /// buffer and the slot tables are unchanged; the K/V cache is fp16. Not with the CPU custom operators
    /// (packed steps, the Segmented adapter kernel: <see cref="AdapterKernelKind.Auto"/> picks BatchedMatMul), the fused
    /// decode graph or quantised weights. The CPU provider runs fp16 blocks (casting around kernels with no fp16 form,
    /// so slower than fp32): that is how tests check them without a GPU.
    /// </summary>
    public ComputePrecision Precision { get; init; }

    /// <summary>
    /// How the projection weights are stored (<see cref="Graphs.WeightFormat"/>): fp32, or quantised at load (block-wise,
    /// round to nearest) and run by <c>MatMulNBits</c>. Embeddings and norms stay fp32; the LM head too unless
    /// <see cref="QuantizeHead"/>. Adapter updates stay fp32 on top (as QLoRA serving does).
    /// </summary>
    public Graphs.WeightFormat Weights { get; init; } = Graphs.WeightFormat.Fp32;

    /// <summary>Values per quantisation block along the input dimension (a power of two, 16 to 256).</summary>
    public int WeightBlockSize { get; init; } = 32;

    /// <summary>
    /// <c>MatMulNBits</c>'s <c>accuracy_level</c>: 0 computes in fp32 on the dequantised weights (the quantisation is the
    /// only change); 4 also quantises the activations to int8 per block and uses integer dot products (faster on CPUs
    /// with VNNI/AVX2; see docs/benchmarks.md, "Quantised weights").
    /// </summary>
    public int WeightAccuracyLevel { get; init; } = 4;

    /// <summary>Also quantise the LM head (measured separately: on small models it is the largest matrix).</summary>
    public bool QuantizeHead { get; init; }

    /// <summary>
    /// Tests only: keep the decoder's bound state (K/V cache, hidden states, positions, lengths) in separate host
    /// allocations that stand in for device memory (<see cref="DeviceMemory"/>), so that the CUDA provider's
    /// device-resident path — uploads, downloads, device-side slot copies — runs on the CPU provider.
    /// </summary>
    internal bool EmulateDeviceMemory { get; init; }

    /// <summary>Validates ranges.</summary>
    public void Validate()
    {
        if (!Enum.IsDefined(Weights)) throw new ArgumentOutOfRangeException(nameof(Weights), Weights, "fp32, int8 or int4");
        if (WeightBlockSize is < 16 or > 256 || (WeightBlockSize & (WeightBlockSize - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(WeightBlockSize), WeightBlockSize, "must be a power of two in [16, 256]");
        }
        if (WeightAccuracyLevel is < 0 or > 4) throw new ArgumentOutOfRangeException(nameof(WeightAccuracyLevel), WeightAccuracyLevel, "must be in [0, 4]");
        if (QuantizeHead && Weights == Graphs.WeightFormat.Fp32)
        {
            throw new ArgumentException("QuantizeHead needs Weights int8 or int4", nameof(QuantizeHead));
        }
        if (MaxBatch is < 1 or > 4096) throw new ArgumentOutOfRangeException(nameof(MaxBatch), MaxBatch, "must be in [1, 4096]");
        if (MaxContext < 2) throw new ArgumentOutOfRangeException(nameof(MaxContext), MaxContext, "must be at least 2");
        if (MaxStepTokens is < 0 or > 65536) throw new ArgumentOutOfRangeException(nameof(MaxStepTokens), MaxStepTokens, "must be in [0, 65536] (0: the larger of MaxBatch and MaxContext)");
        if (Threads < 0) throw new ArgumentOutOfRangeException(nameof(Threads), Threads, "must be non-negative");
        if (AdapterSlots is < 0 or > 256) throw new ArgumentOutOfRangeException(nameof(AdapterSlots), AdapterSlots, "must be in [0, 256]");
        if (AdapterMaxRank is < 1 or > 1024) throw new ArgumentOutOfRangeException(nameof(AdapterMaxRank), AdapterMaxRank, "must be in [1, 1024]");
        if (PackedSteps && ExecutionProvider != ExecutionProviderKind.Cpu)
        {
            throw new ArgumentException("packed steps (early exit, speculative decoding) run on the CPU provider only", nameof(PackedSteps));
        }
        if (PackedSteps && EmulateDeviceMemory)
        {
            throw new ArgumentException("packed steps read the K/V cache from the host; they do not run with device memory", nameof(PackedSteps));
        }
        if (PackedSteps && AdapterSlots > 0 && !UsesSegmentedAdapters)
        {
            throw new ArgumentException("packed steps take adapters through the Segmented kernel only", nameof(PackedSteps));
        }
        if (AdapterKernel == AdapterKernelKind.Segmented && ExecutionProvider != ExecutionProviderKind.Cpu)
        {
            throw new ArgumentException("the Segmented adapter kernel runs on the CPU provider only; use Auto or BatchedMatMul with CUDA", nameof(AdapterKernel));
        }
        if (!Enum.IsDefined(Precision)) throw new ArgumentOutOfRangeException(nameof(Precision), Precision, "Float32 or Float16");
        if (Precision == ComputePrecision.Float16)
        {
            var conflict = PackedSteps ? "packed steps (early exit, speculative decoding)"
                : AdapterKernel == AdapterKernelKind.Segmented ? "the Segmented adapter kernel"
                : FusedDecode ? "the fused decode graph"
                : Weights != Graphs.WeightFormat.Fp32 ? "quantised weights"
                : null;
            if (conflict is not null) throw new ArgumentException($"fp16 blocks do not run with {conflict} (fp32 CPU operators); turn one of them off", nameof(Precision));
        }
    }
}

/// <summary>The arithmetic of the generated blocks (<see cref="RuntimeOptions.Precision"/>).</summary>
public enum ComputePrecision
{
    /// <summary>fp32 weights, activations and K/V cache.</summary>
    Float32,

    /// <summary>fp16 weights, activations and K/V cache inside the blocks; fp32 at their boundaries.</summary>
    Float16,
}
