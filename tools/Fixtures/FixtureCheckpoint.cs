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

    public static FixtureShape Named(string name) => name switch
    {
        "tiny-gpt2" => TinyGpt2,
        "tiny-llama" => TinyLlama,
        "gpt2-small" => Gpt2Small,
        "llama-small" => LlamaSmall,
        _ => throw new ArgumentException($"unknown shape '{name}' (tiny-gpt2, tiny-llama, gpt2-small, llama-small)"),
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
            Add("model.embed_tokens.weight", Normal((long)v * d, std), v, d);
            for (var i = 0; i < s.Layers; i++)
            {
                var p = $"model.layers.{i}.";
                Add(p + "input_layernorm.weight", Around(d, 1, 0.1f), d);
                Add(p + "self_attn.q_proj.weight", Normal((long)s.Heads * hd * d, std), s.Heads * hd, d);
                Add(p + "self_attn.k_proj.weight", Normal((long)kvHeads * hd * d, std), kvHeads * hd, d);
                Add(p + "self_attn.v_proj.weight", Normal((long)kvHeads * hd * d, std), kvHeads * hd, d);
                if (s.AttentionBias)
                {
                    Add(p + "self_attn.q_proj.bias", Normal(s.Heads * hd, 0.1f), s.Heads * hd);
                    Add(p + "self_attn.k_proj.bias", Normal(kvHeads * hd, 0.1f), kvHeads * hd);
                    Add(p + "self_attn.v_proj.bias", Normal(kvHeads * hd, 0.1f), kvHeads * hd);
                }
                Add(p + "self_attn.o_proj.weight", Normal((long)d * s.Heads * hd, std), d, s.Heads * hd);
                Add(p + "post_attention_layernorm.weight", Around(d, 1, 0.1f), d);
                Add(p + "mlp.gate_proj.weight", Normal((long)f * d, std), f, d);
                Add(p + "mlp.up_proj.weight", Normal((long)f * d, std), f, d);
                Add(p + "mlp.down_proj.weight", Normal((long)d * f, std), d, f);
            }
            Add("model.norm.weight", Around(d, 1, 0.1f), d);
            if (!s.TieEmbeddings) Add("lm_head.weight", Normal((long)v * d, std), v, d);
            config = new JsonObject
            {
                ["architectures"] = new JsonArray(s.AttentionBias ? "Qwen2ForCausalLM" : "LlamaForCausalLM"),
                ["model_type"] = s.AttentionBias ? "qwen2" : "llama",
                ["hidden_act"] = "silu",
                ["hidden_size"] = d, ["intermediate_size"] = f, ["num_hidden_layers"] = s.Layers,
                ["num_attention_heads"] = s.Heads, ["num_key_value_heads"] = kvHeads, ["head_dim"] = hd,
                ["max_position_embeddings"] = s.MaxPositions, ["rms_norm_eps"] = 1e-5, ["rope_theta"] = s.RopeTheta,
                ["rope_scaling"] = null, ["vocab_size"] = v, ["tie_word_embeddings"] = s.TieEmbeddings,
                ["attention_bias"] = s.AttentionBias, ["mlp_bias"] = false,
                ["bos_token_id"] = v - 1, ["eos_token_id"] = v - 1, ["torch_dtype"] = s.Fp16 ? "float16" : "float32",
            };
        }
        SafetensorsWriter.Write(Path.Combine(directory, "model.safetensors"), entries, new Dictionary<string, string> { ["format"] = "pt" });
        File.WriteAllText(Path.Combine(directory, "config.json"), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        // Random weights have no trained tokenizer: the byte tokenizer (ids 0..255) covers them.
        File.WriteAllText(Path.Combine(directory, "tokenizer_config.json"), """{"tokenizer_class": "ByteTokenizer"}""");
    }
}
