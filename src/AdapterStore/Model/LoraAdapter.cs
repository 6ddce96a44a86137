namespace Serving.AdapterStore;

/// <summary>
/// One adapted projection, materialised as plain LoRA factors in PEFT orientation:
/// <c>ΔW = Scale · B · A</c> with ΔW in [out, in] (the logical <c>y = W x</c> orientation, also for GPT-2 Conv1D).
/// A and B are not pre-scaled; use <see cref="ScaledB"/> to fold the scale for slot storage.
/// </summary>
/// <param name="Module">Layer-relative module name (<c>attn.c_attn</c>, <c>self_attn.q_proj</c>, ...).</param>
/// <param name="Layer">Transformer block index.</param>
/// <param name="Rank">r.</param>
/// <param name="InFeatures">Input width.</param>
/// <param name="OutFeatures">Output width.</param>
/// <param name="Scale">s in <c>y = W x + s·B(A x)</c>.</param>
/// <param name="A">Row-major [r, in].</param>
/// <param name="B">Row-major [out, r].</param>
public sealed record LoraWeights(string Module, int Layer, int Rank, int InFeatures, int OutFeatures, float Scale, float[] A, float[] B)
{
    /// <summary>Returns a new [out, r] array holding <c>Scale · B</c>.</summary>
    public float[] ScaledB()
    {
        var result = new float[B.Length];
        for (int i = 0; i < B.Length; i++) result[i] = B[i] * Scale;
        return result;
    }
}

/// <summary>A decoded adapter ready for the inference node: per-module LoRA factors, whatever the upload's parameterisation.</summary>
/// <param name="SourceKind">How the adapter was uploaded (VeRA and VB-LoRA are already materialised here).</param>
/// <param name="Architecture">Base architecture family (<c>gpt2</c> or <c>llama</c>).</param>
/// <param name="Modules">Adapted modules in (layer, module) order.</param>
public sealed record LoraAdapter(AdapterKind SourceKind, string Architecture, IReadOnlyList<LoraWeights> Modules)
{
    /// <summary>Largest rank over all modules (slots are padded to it).</summary>
    public int MaxRank
    {
        get
        {
            int max = 0;
            foreach (var m in Modules) max = Math.Max(max, m.Rank);
            return max;
        }
    }

    /// <summary>Bytes of float32 A and B over all modules.</summary>
    public long Float32Bytes
    {
        get
        {
            long total = 0;
            foreach (var m in Modules) total += 4L * (m.A.Length + m.B.Length);
            return total;
        }
    }

    /// <summary>The weights for one module of one layer, or null when that projection is not adapted.</summary>
    public LoraWeights? Find(int layer, string module)
    {
        foreach (var m in Modules)
        {
            if (m.Layer == layer && m.Module == module) return m;
        }
        return null;
    }
}
