using Serving.AdapterStore;

namespace Serving.AdapterStore.Tests;

/// <summary>Builds synthetic LoRA payloads with seeded randomness.</summary>
internal static class TestAdapters
{
    public static float[] Gaussian(Random rng, int n, double std)
    {
        var v = new float[n];
        for (int i = 0; i < n; i++)
        {
            double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
            v[i] = (float)(std * Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
        return v;
    }

    /// <summary>GPT-2-shaped LoRA on all four module types.</summary>
    public static AdapterPayload Gpt2Lora(int layers, int d, int rank, int seed, TensorElementType type = TensorElementType.F32)
    {
        var rng = new Random(seed);
        var modules = new List<ModuleSpec>();
        var tensors = new List<AdapterTensor>();
        for (int l = 0; l < layers; l++)
        {
            foreach (var (module, inF, outF) in new[] { ("attn.c_attn", d, 3 * d), ("attn.c_proj", d, d), ("mlp.c_fc", d, 4 * d), ("mlp.c_proj", 4 * d, d) })
            {
                string path = $"transformer.h.{l}.{module}";
                modules.Add(new ModuleSpec(path, module, l, inF, outF, rank, 2f));
                tensors.Add(new AdapterTensor($"base_model.model.{path}.lora_A.weight", [rank, inF], Round(Gaussian(rng, rank * inF, 0.02), type), type));
                tensors.Add(new AdapterTensor($"base_model.model.{path}.lora_B.weight", [outF, rank], Round(Gaussian(rng, outF * rank, 0.01), type), type));
            }
        }
        var manifest = new AdapterManifest { Kind = AdapterKind.Lora, Architecture = "gpt2", Modules = modules };
        return new AdapterPayload(manifest, tensors);
    }

    public static float[] Round(float[] v, TensorElementType type)
    {
        for (int i = 0; i < v.Length; i++)
        {
            v[i] = type switch
            {
                TensorElementType.F16 => (float)(Half)v[i],
                TensorElementType.BF16 => BitConverter.UInt32BitsToSingle(BitConverter.SingleToUInt32Bits(v[i]) & 0xFFFF0000u),
                _ => v[i],
            };
        }
        return v;
    }
}
