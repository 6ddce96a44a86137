using System.Net.Http.Headers;
using Serving.Checkpoints;

namespace Serving.Gateway.Tests.Infrastructure;

/// <summary>A tiny GPT-2 base config and a LoRA adapter for it in peft's layout, for upload tests.</summary>
public static class TinyPeft
{
    public const string Gpt2Config = """
        {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 16, "n_layer": 1, "n_head": 2,
         "n_positions": 64, "vocab_size": 50, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new"}
        """;

    /// <summary>Writes the base config to a temp file and returns its path.</summary>
    public static string WriteBaseConfig()
    {
        string dir = Directory.CreateTempSubdirectory("gw-base-").FullName;
        string path = Path.Combine(dir, "config.json");
        File.WriteAllText(path, Gpt2Config);
        return path;
    }

    /// <summary>Multipart body: adapter_config.json + adapter_model.safetensors (LoRA r=2 on c_attn).</summary>
    public static MultipartFormDataContent Upload(string baseModel)
    {
        const int d = 16, r = 2;
        var rng = new Random(5);
        float[] Rand(int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() - 0.5) * 0.1f).ToArray();
        var entries = new List<SafetensorsWriter.Entry>
        {
            SafetensorsWriter.Entry.F32("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight", [r, d], Rand(r * d)),
            SafetensorsWriter.Entry.F32("base_model.model.transformer.h.0.attn.c_attn.lora_B.weight", [3 * d, r], Rand(3 * d * r)),
        };
        string config = $$"""
            {"base_model_name_or_path": "{{baseModel}}", "bias": "none", "fan_in_fan_out": true, "lora_alpha": 4,
             "modules_to_save": null, "peft_type": "LORA", "r": {{r}}, "target_modules": ["c_attn"], "task_type": "CAUSAL_LM"}
            """;
        var form = new MultipartFormDataContent();
        var c = new ByteArrayContent(System.Text.Encoding.UTF8.GetBytes(config));
        c.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        form.Add(c, "config", "adapter_config.json");
        form.Add(new ByteArrayContent(SafetensorsWriter.ToBytes(entries, new Dictionary<string, string> { ["format"] = "pt" })), "weights", "adapter_model.safetensors");
        form.Add(new StringContent(baseModel), "base_model");
        return form;
    }
}
