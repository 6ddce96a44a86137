using System.Text.Json;
using Serving.AdapterStore.Peft;
using Serving.Checkpoints;

namespace Serving.AdapterStore.Tests.Peft;

/// <summary>A PEFT output folder in memory: the two files peft's save_pretrained writes.</summary>
internal sealed record PeftFolder(string ConfigJson, byte[] Safetensors, Dictionary<string, (long[] Shape, float[] Data)> Tensors)
{
    public byte[] ConfigBytes => System.Text.Encoding.UTF8.GetBytes(ConfigJson);
}

/// <summary>
/// Builds adapters with peft's key names and config keys (adapter name stripped, <c>base_model.model.</c> prefix,
/// Conv1D GPT-2 A/B still stored as nn.Linear weights [r, in] / [out, r]).
/// </summary>
internal static class PeftFolders
{
    public const string Gpt2ConfigJson = """
        {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4,
         "n_positions": 128, "vocab_size": 100, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new"}
        """;

    public const string LlamaConfigJson = """
        {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 1, "intermediate_size": 96, "vocab_size": 100,
         "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": true, "hidden_act": "silu"}
        """;

    /// <summary>A tiny Phi-3 (fused qkv_proj and gate_up_proj).</summary>
    public const string Phi3ConfigJson = """
        {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 100,
         "max_position_embeddings": 128, "original_max_position_embeddings": 128, "rms_norm_eps": 1e-5, "sliding_window": 63,
         "tie_word_embeddings": false, "hidden_act": "silu"}
        """;

    public static BaseModelShape Gpt2 => BaseModelShape.FromConfig(ModelConfig.Parse(Gpt2ConfigJson));
    public static BaseModelShape Phi3 => BaseModelShape.FromConfig(ModelConfig.Parse(Phi3ConfigJson));
    public static BaseModelShape Llama => BaseModelShape.FromConfig(ModelConfig.Parse(LlamaConfigJson));

    public static string LoraConfig(string baseModel, int r, double alpha, object targets, bool fanInFanOut, string extra = "")
    {
        string t = JsonSerializer.Serialize(targets);
        return $$"""
            {"alpha_pattern": {}, "auto_mapping": null, "base_model_name_or_path": "{{baseModel}}", "bias": "none",
             "fan_in_fan_out": {{(fanInFanOut ? "true" : "false")}}, "inference_mode": true, "init_lora_weights": true,
             "layer_replication": null, "layers_pattern": null, "layers_to_transform": null, "loftq_config": {},
             "lora_alpha": {{alpha}}, "lora_dropout": 0.05, "megatron_config": null, "megatron_core": "megatron.core",
             "modules_to_save": null, "peft_type": "LORA", "r": {{r}}, "rank_pattern": {}, "revision": null,
             "target_modules": {{t}}, "task_type": "CAUSAL_LM", "use_dora": false, "use_rslora": false{{extra}}}
            """;
    }

    public static float[] Random(Random rng, long n, double scale = 0.05)
    {
        var v = new float[n];
        for (long i = 0; i < n; i++) v[i] = (float)((rng.NextDouble() * 2 - 1) * scale);
        return v;
    }

    public static PeftFolder Build(string configJson, IEnumerable<(string Name, long[] Shape, float[] Data)> tensors, SafetensorsDType dtype = SafetensorsDType.F32)
    {
        var map = new Dictionary<string, (long[], float[])>();
        var entries = new List<SafetensorsWriter.Entry>();
        foreach (var (name, shape, data) in tensors)
        {
            map[name] = (shape, data);
            entries.Add(dtype switch
            {
                SafetensorsDType.F16 => SafetensorsWriter.Entry.F16(name, shape, data),
                SafetensorsDType.BF16 => Bf16(name, shape, data),
                _ => SafetensorsWriter.Entry.F32(name, shape, data),
            });
        }
        return new PeftFolder(configJson, SafetensorsWriter.ToBytes(entries, new Dictionary<string, string> { ["format"] = "pt" }), map);
    }

    private static SafetensorsWriter.Entry Bf16(string name, long[] shape, float[] data)
    {
        var bytes = new byte[data.Length * 2];
        for (int i = 0; i < data.Length; i++)
        {
            ushort b = (ushort)(BitConverter.SingleToUInt32Bits(data[i]) >> 16);
            data[i] = BitConverter.UInt32BitsToSingle((uint)b << 16);
            bytes[2 * i] = (byte)b;
            bytes[2 * i + 1] = (byte)(b >> 8);
        }
        return new SafetensorsWriter.Entry(name, SafetensorsDType.BF16, shape, bytes);
    }

    /// <summary>GPT-2 LoRA on c_attn, c_proj (both), c_fc; rank r, alpha 16 (on <paramref name="baseShape"/>, default <see cref="Gpt2"/>).</summary>
    public static PeftFolder Gpt2Lora(int seed = 1, int r = 4, SafetensorsDType dtype = SafetensorsDType.F32, string extraConfig = "", bool rankPatternFc = false,
        BaseModelShape? baseShape = null)
    {
        var rng = new Random(seed);
        var shape = baseShape ?? Gpt2;
        var list = new List<(string, long[], float[])>();
        for (int l = 0; l < shape.NumLayers; l++)
        {
            foreach (var module in shape.Modules)
            {
                int rank = rankPatternFc && module == "mlp.c_fc" ? 2 : r;
                var (i, o) = shape.Widths(module)!.Value;
                string p = $"base_model.model.transformer.h.{l}.{module}";
                list.Add(($"{p}.lora_A.weight", [rank, i], Random(rng, rank * i)));
                list.Add(($"{p}.lora_B.weight", [o, rank], Random(rng, o * rank)));
            }
        }
        string extra = extraConfig + (rankPatternFc ? "" : "");
        string config = LoraConfig("gpt2", r, 16, new[] { "c_attn", "c_proj", "c_fc" }, fanInFanOut: true, extra);
        if (rankPatternFc) config = config.Replace("\"rank_pattern\": {}", "\"rank_pattern\": {\"c_fc\": 2}");
        return Build(config, list, dtype);
    }

    /// <summary>Qwen2-style (GQA, k/v narrower than q) LoRA on all seven projections, rsLoRA (on <paramref name="baseShape"/>, default <see cref="Llama"/>).</summary>
    public static PeftFolder LlamaLora(int seed = 2, int r = 8, BaseModelShape? baseShape = null)
    {
        var rng = new Random(seed);
        var shape = baseShape ?? Llama;
        var list = new List<(string, long[], float[])>();
        for (int l = 0; l < shape.NumLayers; l++)
        {
            foreach (var module in shape.Modules)
            {
                var (i, o) = shape.Widths(module)!.Value;
                string p = $"base_model.model.model.layers.{l}.{module}";
                list.Add(($"{p}.lora_A.weight", [r, i], Random(rng, r * i)));
                list.Add(($"{p}.lora_B.weight", [o, r], Random(rng, o * r)));
            }
        }
        string config = LoraConfig("Qwen/Qwen2-0.5B", r, 16, "(.*\\.)?(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)", fanInFanOut: false)
            .Replace("\"use_rslora\": false", "\"use_rslora\": true");
        return Build(config, list, SafetensorsDType.BF16);
    }

    /// <summary>A Phi-3 LoRA as peft writes it for Phi-3 fine-tunes: targets qkv_proj, o_proj, gate_up_proj, down_proj.</summary>
    public static PeftFolder Phi3Lora(int seed = 4, int r = 4)
    {
        var rng = new Random(seed);
        var shape = Phi3;
        var list = new List<(string, long[], float[])>();
        for (int l = 0; l < shape.NumLayers; l++)
        {
            foreach (var module in shape.Modules)
            {
                var (i, o) = shape.Widths(module)!.Value;
                string p = $"base_model.model.model.layers.{l}.{module}";
                list.Add(($"{p}.lora_A.weight", [r, i], Random(rng, r * i)));
                list.Add(($"{p}.lora_B.weight", [o, r], Random(rng, o * r)));
            }
        }
        string config = LoraConfig("microsoft/Phi-3-mini-4k-instruct", r, 8, new[] { "qkv_proj", "o_proj", "gate_up_proj", "down_proj" }, fanInFanOut: false);
        return Build(config, list);
    }

    /// <summary>VeRA with saved projection on the given base.</summary>
    public static PeftFolder Vera(BaseModelShape shape, int seed = 3, int r = 16)
    {
        var rng = new Random(seed);
        int maxIn = shape.Modules.Max(m => shape.Widths(m)!.Value.In), maxOut = shape.Modules.Max(m => shape.Widths(m)!.Value.Out);
        var list = new List<(string, long[], float[])>
        {
            ("base_model.vera_A", [r, maxIn], Random(rng, r * maxIn, 0.3)),
            ("base_model.vera_B", [maxOut, r], Random(rng, maxOut * r, 0.3)),
        };
        string prefix = shape.Architecture == BaseModelShape.Gpt2 ? "transformer.h" : "model.layers";
        var targets = shape.Architecture == BaseModelShape.Gpt2 ? new[] { "c_attn", "c_proj", "c_fc" } : new[] { "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" };
        for (int l = 0; l < shape.NumLayers; l++)
        {
            foreach (var module in shape.Modules)
            {
                var (_, o) = shape.Widths(module)!.Value;
                string p = $"base_model.model.{prefix}.{l}.{module}";
                list.Add(($"{p}.vera_lambda_b", [o], Random(rng, o, 1.0)));
                list.Add(($"{p}.vera_lambda_d", [r], Random(rng, r, 1.0)));
            }
        }
        string config = $$"""
            {"base_model_name_or_path": "x", "bias": "none", "d_initial": 0.1, "fan_in_fan_out": false, "inference_mode": true,
             "init_weights": true, "layers_pattern": null, "layers_to_transform": null, "modules_to_save": null, "peft_type": "VERA",
             "projection_prng_key": 0, "r": {{r}}, "revision": null, "save_projection": true, "target_modules": {{JsonSerializer.Serialize(targets)}},
             "task_type": "CAUSAL_LM", "vera_dropout": 0.0}
            """;
        return Build(config, list);
    }

    /// <summary>VB-LoRA on the given base (vector_length 16 divides every width), full logits or top-k only.</summary>
    public static PeftFolder VbLora(BaseModelShape shape, bool topkOnly, int seed = 4, int r = 4, int nv = 32, int len = 16, int k = 2)
    {
        var rng = new Random(seed);
        var list = new List<(string, long[], float[])> { ("base_model.vblora_vector_bank", [nv, len], Random(rng, nv * len, 0.5)) };
        string prefix = shape.Architecture == BaseModelShape.Gpt2 ? "transformer.h" : "model.layers";
        var targets = shape.Architecture == BaseModelShape.Gpt2 ? new[] { "c_attn", "c_proj", "c_fc" } : new[] { "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" };
        var ints = new List<(string, long[], long[])>();
        for (int l = 0; l < shape.NumLayers; l++)
        {
            foreach (var module in shape.Modules)
            {
                var (i, o) = shape.Widths(module)!.Value;
                string p = $"base_model.model.{prefix}.{l}.{module}";
                var la = Random(rng, r * (i / len) * nv, 3.0);
                var lb = Random(rng, (o / len) * r * nv, 3.0);
                if (!topkOnly)
                {
                    list.Add(($"{p}.vblora_logits_A", [r, i / len, nv], la));
                    list.Add(($"{p}.vblora_logits_B", [o / len, r, nv], lb));
                    continue;
                }
                foreach (var (suffix, logits, shp) in new[] { ("A", la, new long[] { r, i / len }), ("B", lb, new long[] { o / len, r }) })
                {
                    // peft: logits.topk(k) → indices, softmax(top logits)[..., :-1] → weights.
                    long rows = shp[0] * shp[1];
                    var idx = new long[rows * k];
                    var w = new float[rows * (k - 1)];
                    for (long row = 0; row < rows; row++)
                    {
                        var order = Enumerable.Range(0, nv).OrderByDescending(v => logits[row * nv + v]).Take(k).ToArray();
                        double max = logits[row * nv + order[0]];
                        var e = order.Select(v => Math.Exp(logits[row * nv + v] - max)).ToArray();
                        double s = e.Sum();
                        for (int j = 0; j < k; j++) idx[row * k + j] = order[j];
                        for (int j = 0; j < k - 1; j++) w[row * (k - 1) + j] = (float)(e[j] / s);
                    }
                    ints.Add(($"{p}.vblora_logits_{suffix}_topk_indices", [shp[0], shp[1], k], idx));
                    list.Add(($"{p}.vblora_logits_{suffix}_topk_weights", [shp[0], shp[1], k - 1], w));
                }
            }
        }
        string config = $$"""
            {"base_model_name_or_path": "x", "bias": "none", "fan_in_fan_out": false, "inference_mode": true, "init_logits_std": 0.1,
             "init_vector_bank_bound": 0.02, "layers_pattern": null, "layers_to_transform": null, "modules_to_save": null,
             "num_vectors": {{nv}}, "peft_type": "VBLORA", "r": {{r}}, "revision": null, "save_only_topk_weights": {{(topkOnly ? "true" : "false")}},
             "target_modules": {{JsonSerializer.Serialize(targets)}}, "task_type": "CAUSAL_LM", "topk": {{k}}, "vblora_dropout": 0.0, "vector_length": {{len}}}
            """;
        if (!topkOnly) return Build(config, list);
        var entries = list.Select(t => SafetensorsWriter.Entry.F32(t.Item1, t.Item2, t.Item3))
            .Concat(ints.Select(t => IndexEntry(t.Item1, t.Item2, t.Item3, nv))).ToList();
        var map = list.ToDictionary(t => t.Item1, t => (t.Item2, t.Item3));
        foreach (var t in ints) map[t.Item1] = (t.Item2, t.Item3.Select(x => (float)x).ToArray());
        return new PeftFolder(config, SafetensorsWriter.ToBytes(entries, new Dictionary<string, string> { ["format"] = "pt" }), map);
    }

    /// <summary>peft picks the smallest index dtype: uint8 below 256 vectors, int16 below 2^15.</summary>
    private static SafetensorsWriter.Entry IndexEntry(string name, long[] shape, long[] values, int nv)
    {
        if (nv < 256) return new SafetensorsWriter.Entry(name, SafetensorsDType.U8, shape, values.Select(v => (byte)v).ToArray());
        var bytes = new byte[values.Length * 2];
        for (int i = 0; i < values.Length; i++) BitConverter.TryWriteBytes(bytes.AsSpan(2 * i), (short)values[i]);
        return new SafetensorsWriter.Entry(name, SafetensorsDType.I16, shape, bytes);
    }
}
