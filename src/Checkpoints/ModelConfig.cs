using System.Text.Json;

namespace Serving.Checkpoints;

/// <summary>The decoder families the engine builds graphs for.</summary>
public enum ModelArchitecture
{
    /// <summary>GPT-2: learned positions, LayerNorm, GELU (tanh approximation), Conv1D weights [in, out], tied head.</summary>
    Gpt2,

    /// <summary>Llama family (Llama, Qwen2, Mistral, SmolLM): RMSNorm, rotary, SwiGLU, grouped-query attention.</summary>
    Llama,
}

/// <summary>A config.json that cannot be served: unknown architecture, missing or invalid key.</summary>
public sealed class ModelConfigException(string message) : Exception(message);

/// <summary>
/// The architecture-independent view of a Hugging Face <c>config.json</c>.
/// Keys follow each family's own spelling (GPT-2's <c>n_embd</c>, Llama's <c>hidden_size</c>).
/// </summary>
public sealed record ModelConfig
{
    /// <summary>Architecture family.</summary>
    public required ModelArchitecture Architecture { get; init; }

    /// <summary>The <c>architectures[0]</c> class name (or one derived from <c>model_type</c>).</summary>
    public required string ArchitectureName { get; init; }

    /// <summary>The <c>model_type</c> key (gpt2, llama, qwen2, mistral).</summary>
    public required string ModelType { get; init; }

    public required int HiddenSize { get; init; }
    public required int NumLayers { get; init; }
    public required int NumHeads { get; init; }
    public required int NumKvHeads { get; init; }
    public required int HeadDim { get; init; }
    public required int IntermediateSize { get; init; }
    public required int VocabSize { get; init; }

    /// <summary>Longest sequence the model supports (positions table or rotary range; capped by a sliding window).</summary>
    public required int MaxPositions { get; init; }

    /// <summary>LayerNorm or RMSNorm epsilon.</summary>
    public required float NormEps { get; init; }

    /// <summary>Rotary base (Llama family only).</summary>
    public float RopeTheta { get; init; } = 10000f;

    /// <summary>True when the LM head reuses the token embedding.</summary>
    public required bool TieWordEmbeddings { get; init; }

    /// <summary>q/k/v projections carry a bias (GPT-2, Qwen2, Llama with attention_bias).</summary>
    public bool AttentionBias { get; init; }

    /// <summary>MLP projections carry a bias (GPT-2, Llama with mlp_bias).</summary>
    public bool MlpBias { get; init; }

    /// <summary>Hidden activation as named in the config (gelu_new, silu).</summary>
    public string Activation { get; init; } = "silu";

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
            var config = family == ModelArchitecture.Gpt2 ? ReadGpt2(reader, name) : ReadLlama(reader, name, modelType ?? "llama");
            Validate(config, source);
            return config;
        }
    }

    private static (ModelArchitecture, string) Classify(string? archName, string? modelType, string source)
    {
        switch (archName)
        {
            case "GPT2LMHeadModel" or "GPT2Model": return (ModelArchitecture.Gpt2, archName);
            case "LlamaForCausalLM" or "Qwen2ForCausalLM" or "MistralForCausalLM": return (ModelArchitecture.Llama, archName);
            case null:
                break;
            default:
                throw new ModelConfigException($"{source}: unsupported architecture '{archName}'; supported: GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM");
        }
        return modelType switch
        {
            "gpt2" => (ModelArchitecture.Gpt2, "GPT2LMHeadModel"),
            "llama" => (ModelArchitecture.Llama, "LlamaForCausalLM"),
            "qwen2" => (ModelArchitecture.Llama, "Qwen2ForCausalLM"),
            "mistral" => (ModelArchitecture.Llama, "MistralForCausalLM"),
            null => throw new ModelConfigException($"{source}: neither 'architectures' nor 'model_type' names the architecture"),
            _ => throw new ModelConfigException($"{source}: unsupported model_type '{modelType}'; supported: gpt2, llama, qwen2, mistral"),
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

    private static ModelConfig ReadLlama(ConfigReader r, string name, string modelType)
    {
        var d = r.RequiredInt("hidden_size");
        var heads = r.RequiredInt("num_attention_heads");
        var act = r.OptionalString("hidden_act") ?? "silu";
        if (act != "silu")
        {
            throw new ModelConfigException($"{r.Source}: hidden_act '{act}' is not supported (silu)");
        }
        if (r.HasNonNull("rope_scaling"))
        {
            var kind = r.RopeScalingType();
            if (kind is not ("default" or null))
            {
                throw new ModelConfigException($"{r.Source}: rope_scaling type '{kind}' is not supported yet (only unscaled rotary)");
            }
        }
        var maxPos = r.RequiredInt("max_position_embeddings");
        var useWindow = modelType == "mistral" || (r.OptionalBool("use_sliding_window") ?? false);
        var window = r.OptionalInt("sliding_window");
        if (useWindow && window is > 0 && window < maxPos) maxPos = window.Value;
        var qwen = name == "Qwen2ForCausalLM";
        return new ModelConfig
        {
            Architecture = ModelArchitecture.Llama,
            ArchitectureName = name,
            ModelType = modelType,
            HiddenSize = d,
            NumLayers = r.RequiredInt("num_hidden_layers"),
            NumHeads = heads,
            NumKvHeads = r.OptionalInt("num_key_value_heads") ?? heads,
            HeadDim = r.OptionalInt("head_dim") ?? (heads > 0 ? d / heads : 0),
            IntermediateSize = r.RequiredInt("intermediate_size"),
            VocabSize = r.RequiredInt("vocab_size"),
            MaxPositions = maxPos,
            NormEps = r.OptionalFloat("rms_norm_eps") ?? 1e-6f,
            RopeTheta = r.OptionalFloat("rope_theta") ?? 10000f,
            TieWordEmbeddings = r.OptionalBool("tie_word_embeddings") ?? false,
            AttentionBias = qwen || (r.OptionalBool("attention_bias") ?? false),
            MlpBias = r.OptionalBool("mlp_bias") ?? false,
            Activation = act,
            BosTokenId = r.OptionalInt("bos_token_id"),
            EosTokenId = r.OptionalInt("eos_token_id"),
        };
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
    }

    private sealed class ConfigReader(JsonElement root, string source)
    {
        public string Source => source;

        public bool HasNonNull(string key) => root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null;

        public string? FirstArchitecture()
        {
            if (!root.TryGetProperty("architectures", out var a) || a.ValueKind != JsonValueKind.Array || a.GetArrayLength() == 0)
            {
                return null;
            }
            return a[0].ValueKind == JsonValueKind.String ? a[0].GetString() : throw Invalid("architectures", "a list of strings");
        }

        public string? RopeScalingType()
        {
            var s = root.GetProperty("rope_scaling");
            if (s.ValueKind != JsonValueKind.Object) return "unknown";
            foreach (var key in new[] { "rope_type", "type" })
            {
                if (s.TryGetProperty(key, out var t) && t.ValueKind == JsonValueKind.String) return t.GetString();
            }
            return "unknown";
        }

        public int RequiredInt(string key) =>
            OptionalInt(key) ?? throw new ModelConfigException($"{source}: missing required key '{key}'");

        public int? OptionalInt(string key)
        {
            if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
            if (v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out var i)) return i;
            // A list of eos ids is legal in newer configs: the first is the canonical one.
            if (v.ValueKind == JsonValueKind.Array && v.GetArrayLength() > 0 && v[0].TryGetInt32(out var first)) return first;
            throw Invalid(key, "an integer");
        }

        public float? OptionalFloat(string key)
        {
            if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
            return v.ValueKind == JsonValueKind.Number ? (float)v.GetDouble() : throw Invalid(key, "a number");
        }

        public bool? OptionalBool(string key)
        {
            if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
            return v.ValueKind switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                _ => throw Invalid(key, "true or false"),
            };
        }

        public string? OptionalString(string key)
        {
            if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
            return v.ValueKind == JsonValueKind.String ? v.GetString() : throw Invalid(key, "a string");
        }

        private ModelConfigException Invalid(string key, string expected) =>
            new($"{source}: key '{key}' must be {expected}");
    }
}
