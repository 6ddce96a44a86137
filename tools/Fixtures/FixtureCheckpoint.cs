using System.Text.Json;
using System.Text.Json.Nodes;
using Serving.Checkpoints;

namespace Serving.Fixtures;

/// <summary>Shape of a randomly initialised checkpoint.</summary>
public sealed record FixtureShape
{
    public required ModelArchitecture Architecture { get; init; }
    public required int Hidden { get; init; }
    public required int Layers { get; init; }
    public required int Heads { get; init; }
    public int KvHeads { get; init; }
    public required int Intermediate { get; init; }
    public required int Vocab { get; init; }
    public int MaxPositions { get; init; } = 1024;
    public float RopeTheta { get; init; } = 10000f;
    public bool TieEmbeddings { get; init; } = true;
    public bool AttentionBias { get; init; }

    /// <summary>
    /// Llama-architecture family whose names and config keys the checkpoint uses: <c>llama</c> (default; <c>qwen2</c>
    /// when <see cref="AttentionBias"/>), <c>qwen2</c>, <c>qwen3</c> (q/k norms), <c>mistral</c>, <c>phi3</c> (fused
    /// qkv_proj/gate_up_proj), <c>gemma2</c> (pre/post norms, GeGLU).
    /// </summary>
    public string? Family { get; init; }

    /// <summary>Explicit head width (config <c>head_dim</c>); default hidden / heads.</summary>
    public int? HeadDim { get; init; }

    /// <summary>Keys written into config.json after the family's own (rope_scaling, sliding_window, layer_types, ...); a null value writes JSON null.</summary>
    public IReadOnlyDictionary<string, object?>? ExtraConfig { get; init; }

    /// <summary>Std of the random weights (0.02 as Hugging Face initialises; tests use more so logits spread).</summary>
    public float InitStd { get; init; } = 0.02f;

    /// <summary>Write weights as fp16 instead of fp32.</summary>
    public bool Fp16 { get; init; }

    public static FixtureShape TinyGpt2 => new()
    {
        Architecture = ModelArchitecture.Gpt2, Hidden = 32, Layers = 2, Heads = 4, Intermediate = 128, Vocab = 300,
        MaxPositions = 128, InitStd = 0.2f,
    };

    public static FixtureShape TinyLlama => new()
    {
        Architecture = ModelArchitecture.Llama, Hidden = 48, Layers = 3, Heads = 6, KvHeads = 2, Intermediate = 96, Vocab = 300,
        MaxPositions = 256, RopeTheta = 10000f, TieEmbeddings = false, InitStd = 0.2f,
    };

    /// <summary>BENCHMARKS.md's gpt2-small shape (124M parameters).</summary>
    public static FixtureShape Gpt2Small => new()
    {
        Architecture = ModelArchitecture.Gpt2, Hidden = 768, Layers = 12, Heads = 12, Intermediate = 3072, Vocab = 50257, MaxPositions = 1024,
    };

    /// <summary>BENCHMARKS.md's llama-small shape (SmolLM2-135M's config).</summary>
    public static FixtureShape LlamaSmall => new()
    {
        Architecture = ModelArchitecture.Llama, Hidden = 576, Layers = 30, Heads = 9, KvHeads = 3, Intermediate = 1536, Vocab = 49152,
        MaxPositions = 8192, RopeTheta = 100000f, TieEmbeddings = true,
    };

    /// <summary>
    /// Llama-3.2-1B's published config (16 layers, d 2048, 32 heads / 8 KV heads of 64, FFN 8192, vocab 128256, tied,
    /// rope θ 500000 with llama3 scaling factor 32 from 8192 positions): 1.24B parameters, 4.9 GB fp32.
    /// </summary>
    public static FixtureShape Llama3OneBLike => new()
    {
        Architecture = ModelArchitecture.Llama, Hidden = 2048, Layers = 16, Heads = 32, KvHeads = 8, Intermediate = 8192, Vocab = 128256,
        MaxPositions = 131072, RopeTheta = 500000f, TieEmbeddings = true,
        ExtraConfig = new Dictionary<string, object?>
        {
            ["rope_scaling"] = new Dictionary<string, object>
            {
                ["rope_type"] = "llama3", ["factor"] = 32.0, ["low_freq_factor"] = 1.0, ["high_freq_factor"] = 4.0, ["original_max_position_embeddings"] = 8192,
            },
        },
    };

    /// <summary>
    /// Qwen3-0.6B's published config (28 layers, d 1024, 16 heads / 8 KV heads of 128, q/k norms, FFN 3072, vocab 151936,
    /// tied, rope θ 1000000): 0.6B parameters, 2.4 GB fp32.
    /// </summary>
    public static FixtureShape Qwen3SmallLike => new()
    {
        Architecture = ModelArchitecture.Llama, Family = "qwen3", Hidden = 1024, Layers = 28, Heads = 16, KvHeads = 8, HeadDim = 128,
        Intermediate = 3072, Vocab = 151936, MaxPositions = 40960, RopeTheta = 1000000f, TieEmbeddings = true,
    };

    public static FixtureShape Named(string name) => name switch
    {
        "tiny-gpt2" => TinyGpt2,
        "tiny-llama" => TinyLlama,
        "gpt2-small" => Gpt2Small,
        "llama-small" => LlamaSmall,
        "llama3-1b-like" => Llama3OneBLike,
        "qwen3-small-like" => Qwen3SmallLike,
        _ => FamilyFixtures.TryGet(name) ?? throw new ArgumentException(
            $"unknown shape '{name}' (tiny-gpt2, tiny-llama, gpt2-small, llama-small, llama3-1b-like, qwen3-small-like, {string.Join(", ", FamilyFixtures.Names)})"),
    };
}

/// <summary>Writes randomly initialised checkpoints in Hugging Face layout (config.json + model.safetensors, names as transformers saves them).</summary>
public static class FixtureCheckpoint
{
    public static void Write(string directory, FixtureShape s, int seed = 1)
    {
        Directory.CreateDirectory(directory);
        var rng = new Random(seed);
        var entries = new List<SafetensorsWriter.Entry>();
        void Add(string name, float[] values, params long[] shape) =>
            entries.Add(s.Fp16 ? SafetensorsWriter.Entry.F16(name, shape, values) : SafetensorsWriter.Entry.F32(name, shape, values));
        float[] Normal(long n, float std)
        {
            var a = new float[n];
            for (var i = 0; i < n; i++)
            {
                // Box-Muller
                var u1 = 1.0 - rng.NextDouble();
                var u2 = rng.NextDouble();
                a[i] = (float)(std * Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
            }
            return a;
        }
        float[] Around(long n, float center, float std) => Normal(n, std).Select(x => x + center).ToArray();

        int d = s.Hidden, f = s.Intermediate, v = s.Vocab;
        var kvHeads = s.KvHeads > 0 ? s.KvHeads : s.Heads;
        var hd = d / s.Heads;
        var std = s.InitStd;
        JsonObject config;
        if (s.Architecture == ModelArchitecture.Gpt2)
        {
            Add("transformer.wte.weight", Normal((long)v * d, std), v, d);
            Add("transformer.wpe.weight", Normal((long)s.MaxPositions * d, std), s.MaxPositions, d);
            for (var i = 0; i < s.Layers; i++)
            {
                var p = $"transformer.h.{i}.";
                Add(p + "ln_1.weight", Around(d, 1, 0.1f), d);
                Add(p + "ln_1.bias", Normal(d, 0.1f), d);
                Add(p + "attn.c_attn.weight", Normal((long)d * 3 * d, std), d, 3 * d);
                Add(p + "attn.c_attn.bias", Normal(3 * d, 0.1f), 3 * d);
                Add(p + "attn.c_proj.weight", Normal((long)d * d, std), d, d);
                Add(p + "attn.c_proj.bias", Normal(d, 0.1f), d);
                Add(p + "ln_2.weight", Around(d, 1, 0.1f), d);
                Add(p + "ln_2.bias", Normal(d, 0.1f), d);
                Add(p + "mlp.c_fc.weight", Normal((long)d * f, std), d, f);
                Add(p + "mlp.c_fc.bias", Normal(f, 0.1f), f);
                Add(p + "mlp.c_proj.weight", Normal((long)f * d, std), f, d);
                Add(p + "mlp.c_proj.bias", Normal(d, 0.1f), d);
            }
            Add("transformer.ln_f.weight", Around(d, 1, 0.1f), d);
            Add("transformer.ln_f.bias", Normal(d, 0.1f), d);
            config = new JsonObject
            {
                ["architectures"] = new JsonArray("GPT2LMHeadModel"),
                ["model_type"] = "gpt2",
                ["activation_function"] = "gelu_new",
                ["n_embd"] = d, ["n_layer"] = s.Layers, ["n_head"] = s.Heads, ["n_inner"] = f,
                ["n_positions"] = s.MaxPositions, ["n_ctx"] = s.MaxPositions, ["vocab_size"] = v,
                ["layer_norm_epsilon"] = 1e-5, ["bos_token_id"] = v - 1, ["eos_token_id"] = v - 1,
                ["tie_word_embeddings"] = true, ["torch_dtype"] = s.Fp16 ? "float16" : "float32",
            };
        }
        else
        {
            var family = s.Family ?? (s.AttentionBias ? "qwen2" : "llama");
            var (archName, gemma, phi3, qwen3) = family switch
            {
                "llama" => ("LlamaForCausalLM", false, false, false),
                "qwen2" => ("Qwen2ForCausalLM", false, false, false),
                "qwen3" => ("Qwen3ForCausalLM", false, false, true),
                "mistral" => ("MistralForCausalLM", false, false, false),
                "phi3" => ("Phi3ForCausalLM", false, true, false),
                "gemma2" => ("Gemma2ForCausalLM", true, false, false),
                _ => throw new ArgumentException($"unknown family '{family}' (llama, qwen2, qwen3, mistral, phi3, gemma2)"),
            };
            hd = s.HeadDim ?? hd;
            int q = s.Heads * hd, kv = kvHeads * hd;
            // Gemma stores norm weights as offsets from 1 (it computes x·(1 + w)).
            float[] NormWeight(long n) => gemma ? Normal(n, 0.1f) : Around(n, 1, 0.1f);
            Add("model.embed_tokens.weight", Normal((long)v * d, std), v, d);
            for (var i = 0; i < s.Layers; i++)
            {
                var p = $"model.layers.{i}.";
                Add(p + "input_layernorm.weight", NormWeight(d), d);
                if (phi3)
                {
                    Add(p + "self_attn.qkv_proj.weight", Normal((long)(q + 2 * kv) * d, std), q + 2 * kv, d);
                }
                else
                {
                    Add(p + "self_attn.q_proj.weight", Normal((long)q * d, std), q, d);
                    Add(p + "self_attn.k_proj.weight", Normal((long)kv * d, std), kv, d);
                    Add(p + "self_attn.v_proj.weight", Normal((long)kv * d, std), kv, d);
                }
                if (s.AttentionBias)
                {
                    Add(p + "self_attn.q_proj.bias", Normal(q, 0.1f), q);
                    Add(p + "self_attn.k_proj.bias", Normal(kv, 0.1f), kv);
                    Add(p + "self_attn.v_proj.bias", Normal(kv, 0.1f), kv);
                }
                if (qwen3)
                {
                    Add(p + "self_attn.q_norm.weight", Around(hd, 1, 0.1f), hd);
                    Add(p + "self_attn.k_norm.weight", Around(hd, 1, 0.1f), hd);
                }
                Add(p + "self_attn.o_proj.weight", Normal((long)d * q, std), d, q);
                if (s.AttentionBias && family == "llama") Add(p + "self_attn.o_proj.bias", Normal(d, 0.1f), d); // Llama's attention_bias covers o_proj; Qwen2's does not
                Add(p + "post_attention_layernorm.weight", NormWeight(d), d);
                if (gemma)
                {
                    Add(p + "pre_feedforward_layernorm.weight", NormWeight(d), d);
                    Add(p + "post_feedforward_layernorm.weight", NormWeight(d), d);
                }
                if (phi3)
                {
                    Add(p + "mlp.gate_up_proj.weight", Normal((long)2 * f * d, std), 2 * f, d);
                }
                else
                {
                    Add(p + "mlp.gate_proj.weight", Normal((long)f * d, std), f, d);
                    Add(p + "mlp.up_proj.weight", Normal((long)f * d, std), f, d);
                }
                Add(p + "mlp.down_proj.weight", Normal((long)d * f, std), d, f);
            }
            Add("model.norm.weight", NormWeight(d), d);
            if (!s.TieEmbeddings) Add("lm_head.weight", Normal((long)v * d, std), v, d);
            config = new JsonObject
            {
                ["architectures"] = new JsonArray(archName),
                ["model_type"] = family,
                [gemma ? "hidden_activation" : "hidden_act"] = gemma ? "gelu_pytorch_tanh" : "silu",
                ["hidden_size"] = d, ["intermediate_size"] = f, ["num_hidden_layers"] = s.Layers,
                ["num_attention_heads"] = s.Heads, ["num_key_value_heads"] = kvHeads, ["head_dim"] = hd,
                ["max_position_embeddings"] = s.MaxPositions, ["rms_norm_eps"] = 1e-5, ["rope_theta"] = s.RopeTheta,
                ["rope_scaling"] = null, ["vocab_size"] = v, ["tie_word_embeddings"] = s.TieEmbeddings,
                ["attention_bias"] = s.AttentionBias,
                ["bos_token_id"] = v - 1, ["eos_token_id"] = v - 1, ["torch_dtype"] = s.Fp16 ? "float16" : "float32",
            };
            if (family == "llama") config["mlp_bias"] = false;
            if (family is "mistral" or "phi3") config["sliding_window"] = null;
            if (family is "qwen2" or "qwen3") config["use_sliding_window"] = false;
            if (gemma)
            {
                config["query_pre_attn_scalar"] = hd;
                config["attn_logit_softcapping"] = 50.0;
                config["final_logit_softcapping"] = 30.0;
                config["sliding_window"] = 4096;
            }
            foreach (var (key, value) in s.ExtraConfig ?? new Dictionary<string, object?>())
            {
                config[key] = value is null ? null : JsonSerializer.SerializeToNode(value);
            }
        }
        SafetensorsWriter.Write(Path.Combine(directory, "model.safetensors"), entries, new Dictionary<string, string> { ["format"] = "pt" });
        File.WriteAllText(Path.Combine(directory, "config.json"), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        // Random weights have no trained tokenizer: the byte tokenizer (ids 0..255) covers them.
        File.WriteAllText(Path.Combine(directory, "tokenizer_config.json"), """{"tokenizer_class": "ByteTokenizer"}""");
    }
}
