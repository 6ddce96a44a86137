using System.Text.Json;

namespace Serving.Checkpoints;

/// <summary>The decoder families the engine builds graphs for.</summary>
public enum ModelArchitecture
{
    /// <summary>GPT-2: learned positions, LayerNorm, GELU (tanh approximation), Conv1D weights [in, out], tied head.</summary>
    Gpt2,

    /// <summary>
    /// Llama family (Llama, Qwen2, Qwen3, Mistral, Phi-3, Gemma 2, SmolLM): RMSNorm, rotary, gated MLP, grouped-query
    /// attention; what sets the members apart is a feature of <see cref="ModelConfig"/> (q/k norms, sliding windows,
    /// soft-capping, fused projection names, ...).
    /// </summary>
    Llama,
}

/// <summary>A config.json that cannot be served: unknown architecture, missing or invalid key, unsupported feature.</summary>
public sealed class ModelConfigException(string message) : Exception(message);

/// <summary>
/// The architecture-independent view of a Hugging Face <c>config.json</c>, read as <c>transformers</c> 5 reads each
/// family (its defaults included). Keys follow each family's own spelling (GPT-2's <c>n_embd</c>, Llama's
/// <c>hidden_size</c>). A feature the engine cannot serve is refused here, naming the key, never ignored.
/// </summary>
public sealed record ModelConfig
{
    /// <summary>The architectures this reader serves, for messages.</summary>
    public const string SupportedArchitectures =
        "GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, MistralForCausalLM, Phi3ForCausalLM, Gemma2ForCausalLM";

    /// <summary>Architecture family.</summary>
    public required ModelArchitecture Architecture { get; init; }

    /// <summary>The <c>architectures[0]</c> class name (or one derived from <c>model_type</c>).</summary>
    public required string ArchitectureName { get; init; }

    /// <summary>The <c>model_type</c> key (gpt2, llama, qwen2, qwen3, mistral, phi3, gemma2).</summary>
    public required string ModelType { get; init; }

    public required int HiddenSize { get; init; }
    public required int NumLayers { get; init; }
    public required int NumHeads { get; init; }
    public required int NumKvHeads { get; init; }
    public required int HeadDim { get; init; }
    public required int IntermediateSize { get; init; }
    public required int VocabSize { get; init; }

    /// <summary>
    /// Longest sequence the model serves: the positions table (GPT-2), <c>max_position_embeddings</c> (rotary; with
    /// dynamic NTK, that times <c>factor</c>, the range the scaling is built for).
    /// </summary>
    public required int MaxPositions { get; init; }

    /// <summary>LayerNorm or RMSNorm epsilon.</summary>
    public required float NormEps { get; init; }

    /// <summary>Rotary base (Llama family only).</summary>
    public float RopeTheta { get; init; } = 10000f;

    /// <summary>Rotary variant and its parameters (Llama family only).</summary>
    public RopeParameters Rope { get; init; } = RopeParameters.Default;

    /// <summary>Dimensions of each head that rotary rotates: <c>int(head_dim × partial_rotary_factor)</c>.</summary>
    public int RotaryDim => (int)(HeadDim * Rope.PartialRotaryFactor);

    /// <summary>True when the LM head reuses the token embedding.</summary>
    public required bool TieWordEmbeddings { get; init; }

    /// <summary>q/k/v projections carry a bias (GPT-2, Qwen2, Llama with attention_bias).</summary>
    public bool AttentionBias { get; init; }

    /// <summary>MLP projections carry a bias (GPT-2, Llama with mlp_bias).</summary>
    public bool MlpBias { get; init; }

    /// <summary>Hidden activation as named in the config (gelu_new, silu, gelu_pytorch_tanh).</summary>
    public string Activation { get; init; } = "silu";

    /// <summary>True when the gated MLP's activation is GELU's tanh approximation (Gemma's GeGLU) rather than SiLU.</summary>
    public bool GeluGate => Architecture == ModelArchitecture.Llama && Activation != "silu";

    /// <summary>
    /// Per layer, the sliding attention window in tokens (a query at position i sees keys j with i − W &lt; j ≤ i, as
    /// transformers' <c>sliding_window_overlay</c>), or 0 for full causal attention. Empty: every layer is full.
    /// </summary>
    public IReadOnlyList<int> SlidingWindows { get; init; } = [];

    /// <summary>Layer <paramref name="layer"/>'s sliding window, 0 for full attention.</summary>
    public int SlidingWindow(int layer) => SlidingWindows.Count == 0 ? 0 : SlidingWindows[layer];

    /// <summary>Qwen3: an RMSNorm over each head of q and k (<c>q_norm</c>, <c>k_norm</c>, width head_dim) before rotary.</summary>
    public bool QkNorm { get; init; }

    /// <summary>Phi-3: q|k|v stored fused as <c>self_attn.qkv_proj</c> and gate|up as <c>mlp.gate_up_proj</c>.</summary>
    public bool FusedProjections { get; init; }

    /// <summary>Attention score scale; null for 1/√head_dim (Gemma 2: <c>query_pre_attn_scalar</c>^−½).</summary>
    public float? AttentionScale { get; init; }

    /// <summary>Attention logits soft-capping <c>c·tanh(s/c)</c> before the mask (Gemma 2 <c>attn_logit_softcapping</c>).</summary>
    public float? AttentionSoftcap { get; init; }

    /// <summary>Final logits soft-capping <c>c·tanh(z/c)</c> (Gemma 2 <c>final_logit_softcapping</c>).</summary>
    public float? FinalLogitSoftcap { get; init; }

    /// <summary>Multiplier on the token embedding (Gemma: √hidden_size, rounded to fp32); null for none.</summary>
    public float? EmbeddingScale { get; init; }

    /// <summary>Added to every stored RMSNorm weight before use (Gemma's <c>x·(1 + w)</c>: 1; others 0).</summary>
    public float NormWeightOffset { get; init; }

    /// <summary>Gemma 2: norms after attention and after the MLP too (<c>post_attention_layernorm</c> on the attention output, <c>pre_</c>/<c>post_feedforward_layernorm</c> around the MLP).</summary>
    public bool SandwichNorms { get; init; }

    public int? BosTokenId { get; init; }
    public int? EosTokenId { get; init; }

    /// <summary>Width of the fused q|k|v projection output.</summary>
    public int QkvSize => (NumHeads + 2 * NumKvHeads) * HeadDim;

    /// <summary>Reads and validates a config.json file.</summary>
    public static ModelConfig Load(string path)
    {
        string json;
        try
        {
            json = LinkedFiles.ReadAllText(path);
        }
        catch (IOException ex) // a dangling link too: DanglingLinkException names it
        {
            throw new ModelConfigException($"{path}: cannot read: {ex.Message}");
        }
        return Parse(json, path);
    }

    /// <summary>Parses and validates config.json text.</summary>
    public static ModelConfig Parse(string json, string source = "config.json")
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json);
        }
        catch (JsonException ex)
        {
            throw new ModelConfigException($"{source}: not valid JSON: {ex.Message}");
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new ModelConfigException($"{source}: not a JSON object");
            }
            var reader = new ConfigReader(root, source);
            var modelType = reader.OptionalString("model_type");
            var archName = reader.FirstArchitecture();
            var (family, name) = Classify(archName, modelType, source);
            var config = family == ModelArchitecture.Gpt2 ? ReadGpt2(reader, name) : ReadLlamaFamily(reader, name);
            Validate(config, source);
            return config;
        }
    }

    private static (ModelArchitecture, string) Classify(string? archName, string? modelType, string source)
    {
        switch (archName)
        {
            case "GPT2LMHeadModel" or "GPT2Model": return (ModelArchitecture.Gpt2, archName);
            case "LlamaForCausalLM" or "Qwen2ForCausalLM" or "Qwen3ForCausalLM" or "MistralForCausalLM" or "Phi3ForCausalLM" or "Gemma2ForCausalLM":
                return (ModelArchitecture.Llama, archName);
            case null:
                break;
            default:
                throw new ModelConfigException($"{source}: unsupported architecture '{archName}'; supported: {SupportedArchitectures}");
        }
        return modelType switch
        {
            "gpt2" => (ModelArchitecture.Gpt2, "GPT2LMHeadModel"),
            "llama" => (ModelArchitecture.Llama, "LlamaForCausalLM"),
            "qwen2" => (ModelArchitecture.Llama, "Qwen2ForCausalLM"),
            "qwen3" => (ModelArchitecture.Llama, "Qwen3ForCausalLM"),
            "mistral" => (ModelArchitecture.Llama, "MistralForCausalLM"),
            "phi3" => (ModelArchitecture.Llama, "Phi3ForCausalLM"),
            "gemma2" => (ModelArchitecture.Llama, "Gemma2ForCausalLM"),
            null => throw new ModelConfigException($"{source}: neither 'architectures' nor 'model_type' names the architecture"),
            _ => throw new ModelConfigException($"{source}: unsupported model_type '{modelType}'; supported: gpt2, llama, qwen2, qwen3, mistral, phi3, gemma2"),
        };
    }

    private static ModelConfig ReadGpt2(ConfigReader r, string name)
    {
        var d = r.RequiredInt("n_embd");
        var heads = r.RequiredInt("n_head");
        var act = r.OptionalString("activation_function") ?? "gelu_new";
        if (act is not ("gelu_new" or "gelu_pytorch_tanh" or "gelu"))
        {
            throw new ModelConfigException($"{r.Source}: activation_function '{act}' is not supported (gelu_new, gelu_pytorch_tanh, gelu)");
        }
        return new ModelConfig
        {
            Architecture = ModelArchitecture.Gpt2,
            ArchitectureName = name,
            ModelType = "gpt2",
            HiddenSize = d,
            NumLayers = r.RequiredInt("n_layer"),
            NumHeads = heads,
            NumKvHeads = heads,
            HeadDim = heads > 0 ? d / heads : 0,
            IntermediateSize = r.OptionalInt("n_inner") ?? 4 * d,
            VocabSize = r.RequiredInt("vocab_size"),
            MaxPositions = r.OptionalInt("n_positions") ?? r.RequiredInt("n_ctx"),
            NormEps = r.OptionalFloat("layer_norm_epsilon") ?? 1e-5f,
            TieWordEmbeddings = r.OptionalBool("tie_word_embeddings") ?? true,
            AttentionBias = true,
            MlpBias = true,
            Activation = act,
            BosTokenId = r.OptionalInt("bos_token_id"),
            EosTokenId = r.OptionalInt("eos_token_id"),
        };
    }

    private static ModelConfig ReadLlamaFamily(ConfigReader r, string name)
    {
        var d = r.RequiredInt("hidden_size");
        var heads = r.RequiredInt("num_attention_heads");
        var layers = r.RequiredInt("num_hidden_layers");
        var gemma = name == "Gemma2ForCausalLM";
        var qwen2 = name == "Qwen2ForCausalLM";
        var qwen3 = name == "Qwen3ForCausalLM";
        var modelType = name switch
        {
            "Qwen2ForCausalLM" => "qwen2",
            "Qwen3ForCausalLM" => "qwen3",
            "MistralForCausalLM" => "mistral",
            "Phi3ForCausalLM" => "phi3",
            "Gemma2ForCausalLM" => "gemma2",
            _ => "llama",
        };

        // Gemma names its activation hidden_activation (hidden_act is a legacy alias there).
        var actKey = gemma && r.HasNonNull("hidden_activation") ? "hidden_activation" : "hidden_act";
        var act = r.OptionalString(actKey) ?? (gemma ? "gelu_pytorch_tanh" : "silu");
        if (gemma ? act is not ("gelu_pytorch_tanh" or "gelu_new" or "gelu_fast") : act != "silu")
        {
            throw r.Unsupported(actKey, $"'{act}' is not supported ({(gemma ? "gelu_pytorch_tanh" : "silu")})");
        }
        if (gemma && r.OptionalBool("use_bidirectional_attention") == true)
        {
            throw r.Unsupported("use_bidirectional_attention", "bidirectional attention is not supported (causal decoding only)");
        }

        var maxPos = r.RequiredInt("max_position_embeddings");
        var (rope, theta) = RopeParameters.Read(r, maxPos, defaultTheta: 10000);
        if (rope.Type == RopeType.Dynamic) maxPos = checked((int)Math.Floor(maxPos * rope.Factor));

        var headDim = r.OptionalInt("head_dim") ?? (heads > 0 ? d / heads : 0);
        var windows = ReadSlidingWindows(r, name, layers);
        float? scale = null;
        if (gemma)
        {
            var scalar = r.OptionalDouble("query_pre_attn_scalar") ?? 256;
            if (!(scalar > 0)) throw r.Unsupported("query_pre_attn_scalar", $"must be positive, got {scalar}");
            scale = (float)Math.Pow(scalar, -0.5);
        }
        float? Softcap(string key, double? gemmaDefault)
        {
            // Gemma 2 defaults: 50 (attention) and 30 (final) when the keys are absent; null turns them off.
            double? value = r.HasNonNull(key) ? r.OptionalDouble(key) : (gemma && !Present(r, key) ? gemmaDefault : null);
            if (value is null) return null;
            if (!(value > 0)) throw r.Unsupported(key, $"must be positive, got {value}");
            return (float)value.Value;
        }
        return new ModelConfig
        {
            Architecture = ModelArchitecture.Llama,
            ArchitectureName = name,
            ModelType = modelType,
            HiddenSize = d,
            NumLayers = layers,
            NumHeads = heads,
            NumKvHeads = r.OptionalInt("num_key_value_heads") ?? heads,
            HeadDim = headDim,
            IntermediateSize = r.RequiredInt("intermediate_size"),
            VocabSize = r.RequiredInt("vocab_size"),
            MaxPositions = maxPos,
            NormEps = r.OptionalFloat("rms_norm_eps") ?? (name == "Phi3ForCausalLM" ? 1e-5f : 1e-6f),
            RopeTheta = (float)theta,
            Rope = rope,
            TieWordEmbeddings = r.OptionalBool("tie_word_embeddings") ?? gemma,
            AttentionBias = qwen2 || (!FusedNames(name) && (r.OptionalBool("attention_bias") ?? false)),
            MlpBias = name == "LlamaForCausalLM" && (r.OptionalBool("mlp_bias") ?? false),
            Activation = act,
            SlidingWindows = windows,
            QkNorm = qwen3,
            FusedProjections = FusedNames(name),
            AttentionScale = scale,
            AttentionSoftcap = gemma ? Softcap("attn_logit_softcapping", 50) : null,
            FinalLogitSoftcap = gemma ? Softcap("final_logit_softcapping", 30) : null,
            EmbeddingScale = gemma ? (float)Math.Sqrt(d) : null,
            NormWeightOffset = gemma ? 1f : 0f,
            SandwichNorms = gemma,
            BosTokenId = r.OptionalInt("bos_token_id"),
            EosTokenId = r.OptionalInt("eos_token_id"),
        };
    }

    private static bool FusedNames(string name) => name == "Phi3ForCausalLM";

    private static bool Present(ConfigReader r, string key) => r.Contains(key);

    /// <summary>
    /// Per-layer sliding windows as transformers 5 assigns them: Mistral and Phi-3 window every layer with
    /// <c>sliding_window</c> (Mistral's default 4096 when the key is absent); Qwen2/Qwen3 only with
    /// <c>use_sliding_window</c>, on the layers from <c>max_window_layers</c> on (or as <c>layer_types</c> says); Gemma 2
    /// alternates (even layers sliding) unless <c>layer_types</c> says otherwise. Llama has no window.
    /// </summary>
    private static IReadOnlyList<int> ReadSlidingWindows(ConfigReader r, string name, int layers)
    {
        int? window;
        switch (name)
        {
            case "MistralForCausalLM":
                window = Present(r, "sliding_window") ? r.OptionalInt("sliding_window") : 4096;
                return window is { } w ? Every(layers, Checked(r, w)) : [];
            case "Phi3ForCausalLM":
                window = r.OptionalInt("sliding_window");
                return window is { } pw ? Every(layers, Checked(r, pw)) : [];
            case "Qwen2ForCausalLM" or "Qwen3ForCausalLM":
            {
                window = (r.OptionalBool("use_sliding_window") ?? false) ? (Present(r, "sliding_window") ? r.OptionalInt("sliding_window") : 4096) : null;
                var types = LayerTypes(r, layers);
                if (window is not { } qw) return [];
                var first = r.OptionalInt("max_window_layers") ?? 28;
                var result = new int[layers];
                for (var i = 0; i < layers; i++)
                {
                    var sliding = types is null ? i >= first : types[i];
                    result[i] = sliding ? Checked(r, qw) : 0;
                }
                return result;
            }
            case "Gemma2ForCausalLM":
            {
                window = Present(r, "sliding_window") ? r.OptionalInt("sliding_window") : 4096;
                var types = LayerTypes(r, layers);
                if (window is not { } gw) return [];
                var result = new int[layers];
                for (var i = 0; i < layers; i++)
                {
                    var sliding = types is null ? (i + 1) % 2 == 1 : types[i];
                    result[i] = sliding ? Checked(r, gw) : 0;
                }
                return result;
            }
            default:
                return [];
        }
    }

    private static int Checked(ConfigReader r, int window) =>
        window > 0 ? window : throw r.Unsupported("sliding_window", $"must be positive, got {window}");

    private static int[] Every(int layers, int window) => Enumerable.Repeat(window, layers).ToArray();

    /// <summary><c>layer_types</c> as "is sliding" per layer, or null when absent.</summary>
    private static bool[]? LayerTypes(ConfigReader r, int layers)
    {
        var types = r.OptionalStrings("layer_types");
        if (types is null) return null;
        if (types.Count != layers) throw r.Unsupported("layer_types", $"lists {types.Count} layers, the model has {layers}");
        var sliding = new bool[layers];
        for (var i = 0; i < layers; i++)
        {
            sliding[i] = types[i] switch
            {
                "sliding_attention" => true,
                "full_attention" => false,
                _ => throw r.Unsupported("layer_types", $"layer {i} is '{types[i]}'; supported: full_attention, sliding_attention"),
            };
        }
        return sliding;
    }

    private static void Validate(ModelConfig c, string source)
    {
        void Positive(int value, string key)
        {
            if (value <= 0) throw new ModelConfigException($"{source}: '{key}' must be positive, got {value}");
        }
        Positive(c.HiddenSize, "hidden size");
        Positive(c.NumLayers, "layer count");
        Positive(c.NumHeads, "attention heads");
        Positive(c.NumKvHeads, "key/value heads");
        Positive(c.IntermediateSize, "intermediate size");
        Positive(c.VocabSize, "vocab_size");
        Positive(c.MaxPositions, "max positions");
        if (c.NumHeads % c.NumKvHeads != 0)
        {
            throw new ModelConfigException($"{source}: attention heads ({c.NumHeads}) must be a multiple of key/value heads ({c.NumKvHeads})");
        }
        if (c.Architecture == ModelArchitecture.Gpt2 && c.HiddenSize % c.NumHeads != 0)
        {
            throw new ModelConfigException($"{source}: n_embd ({c.HiddenSize}) must be divisible by n_head ({c.NumHeads})");
        }
        if (c.HeadDim <= 0 || c.HeadDim % 2 != 0)
        {
            throw new ModelConfigException($"{source}: head dimension must be positive and even, got {c.HeadDim}");
        }
        if (c.Architecture == ModelArchitecture.Llama && (c.RotaryDim <= 0 || c.RotaryDim % 2 != 0))
        {
            throw new ModelConfigException($"{source}: partial_rotary_factor {c.Rope.PartialRotaryFactor} leaves {c.RotaryDim} rotary dimensions of {c.HeadDim}; they must be positive and even");
        }
    }
}
