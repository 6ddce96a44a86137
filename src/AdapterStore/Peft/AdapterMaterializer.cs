namespace Serving.AdapterStore.Peft;

/// <summary>Turns an adapter in its native parameterisation into per-module LoRA factors, following peft's definitions.</summary>
public static class AdapterMaterializer
{
    /// <summary>LoRA: A/B as stored. VeRA: <c>A = λ_d ⊙ vera_A[:, :in]</c>, <c>B = λ_b ⊙ vera_B[:out]</c>. VB-LoRA: each sub-vector is the softmax(top-k logits)-weighted sum of bank vectors.</summary>
    public static LoraAdapter Materialize(AdapterPayload payload)
    {
        var manifest = payload.Manifest;
        var tensors = payload.Tensors.ToDictionary(t => t.Name);
        var modules = new List<LoraWeights>(manifest.Modules.Count);
        foreach (var m in manifest.Modules)
        {
            var (a, b) = manifest.Kind switch
            {
                AdapterKind.Lora => (Get(tensors, $"base_model.model.{m.Path}.lora_A.weight"), Get(tensors, $"base_model.model.{m.Path}.lora_B.weight")),
                AdapterKind.Vera => Vera(tensors, manifest.Vera ?? throw new InvalidDataException("VeRA manifest without its parameters."), m),
                _ => VbLora(tensors, manifest.VbLora ?? throw new InvalidDataException("VB-LoRA manifest without its parameters."), m),
            };
            if (a.Length != (long)m.Rank * m.InFeatures || b.Length != (long)m.OutFeatures * m.Rank)
                throw new InvalidDataException($"Module {m.Path}: factor sizes {a.Length}/{b.Length} do not fit rank {m.Rank}, {m.InFeatures}→{m.OutFeatures}.");
            modules.Add(new LoraWeights(m.Module, m.Layer, m.Rank, m.InFeatures, m.OutFeatures, m.Scale, a, b));
        }
        return new LoraAdapter(manifest.Kind, manifest.Architecture, modules);
    }

    private static float[] Get(Dictionary<string, AdapterTensor> tensors, string name) =>
        tensors.TryGetValue(name, out var t) ? t.Data : throw new InvalidDataException($"Payload lacks tensor '{name}'.");

    private static (float[] A, float[] B) Vera(Dictionary<string, AdapterTensor> tensors, VeraSpec spec, ModuleSpec m)
    {
        var sharedA = Get(tensors, PeftAdapterReader.VeraA);
        var sharedB = Get(tensors, PeftAdapterReader.VeraB);
        var lambdaD = Get(tensors, $"base_model.model.{m.Path}.vera_lambda_d");
        var lambdaB = Get(tensors, $"base_model.model.{m.Path}.vera_lambda_b");
        int r = spec.Rank;
        var a = new float[r * m.InFeatures];
        for (int k = 0; k < r; k++)
        {
            for (int i = 0; i < m.InFeatures; i++) a[k * m.InFeatures + i] = lambdaD[k] * sharedA[k * spec.MaxIn + i];
        }
        var b = new float[m.OutFeatures * r];
        for (int o = 0; o < m.OutFeatures; o++)
        {
            for (int k = 0; k < r; k++) b[o * r + k] = lambdaB[o] * sharedB[o * r + k];
        }
        return (a, b);
    }

    private static (float[] A, float[] B) VbLora(Dictionary<string, AdapterTensor> tensors, VbLoraSpec spec, ModuleSpec m)
    {
        var bank = Get(tensors, PeftAdapterReader.VectorBank);
        int r = spec.Rank, len = spec.VectorLength, inTiles = m.InFeatures / len, outTiles = m.OutFeatures / len;
        var a = new float[r * m.InFeatures];
        var b = new float[m.OutFeatures * r];
        var vec = new float[len];
        string prefix = $"base_model.model.{m.Path}";
        var mixA = Mixer(tensors, spec, $"{prefix}.vblora_logits_A");
        var mixB = Mixer(tensors, spec, $"{prefix}.vblora_logits_B");
        for (int k = 0; k < r; k++)
        {
            for (int t = 0; t < inTiles; t++)
            {
                mixA(k * inTiles + t, bank, vec);
                vec.CopyTo(a, k * m.InFeatures + t * len);
            }
        }
        for (int o = 0; o < outTiles; o++)
        {
            for (int k = 0; k < r; k++)
            {
                mixB(o * r + k, bank, vec);
                for (int j = 0; j < len; j++) b[(o * len + j) * r + k] = vec[j];
            }
        }
        return (a, b);
    }

    /// <summary>Returns a function that writes sub-vector <c>row</c> (a flat index over all but the last logits axis) into a buffer.</summary>
    private static Action<int, float[], float[]> Mixer(Dictionary<string, AdapterTensor> tensors, VbLoraSpec spec, string baseName)
    {
        int k = spec.TopK, nv = spec.NumVectors, len = spec.VectorLength;
        if (spec.OnlyTopKWeights)
        {
            var indices = Get(tensors, baseName + "_topk_indices");
            var weights = Get(tensors, baseName + "_topk_weights");
            return (row, bank, output) =>
            {
                Array.Clear(output);
                double rest = 1.0;
                for (int j = 0; j < k; j++)
                {
                    double w;
                    if (j < k - 1)
                    {
                        w = weights[row * (k - 1) + j];
                        rest -= w;
                    }
                    else
                    {
                        w = rest;
                    }
                    int v = (int)indices[row * k + j];
                    for (int x = 0; x < len; x++) output[x] += (float)(w * bank[v * len + x]);
                }
            };
        }
        var logits = Get(tensors, baseName);
        var top = new int[k];
        var p = new double[k];
        return (row, bank, output) =>
        {
            int off = row * nv;
            // Top-k by value; ties go to the lower index.
            for (int j = 0; j < k; j++) top[j] = -1;
            for (int v = 0; v < nv; v++)
            {
                float value = logits[off + v];
                for (int j = 0; j < k; j++)
                {
                    if (top[j] < 0 || value > logits[off + top[j]])
                    {
                        for (int s = k - 1; s > j; s--) top[s] = top[s - 1];
                        top[j] = v;
                        break;
                    }
                }
            }
            double max = logits[off + top[0]], sum = 0;
            for (int j = 0; j < k; j++)
            {
                p[j] = Math.Exp(logits[off + top[j]] - max);
                sum += p[j];
            }
            Array.Clear(output);
            for (int j = 0; j < k; j++)
            {
                float w = (float)(p[j] / sum);
                for (int x = 0; x < len; x++) output[x] += w * bank[top[j] * len + x];
            }
        };
    }
}
