using System.Text.Json.Serialization;

namespace Serving.AdapterStore;

/// <summary>The parameterisation an adapter was uploaded in.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<AdapterKind>))]
public enum AdapterKind
{
    /// <summary>Plain LoRA: per-module A [r, in] and B [out, r].</summary>
    Lora,
    /// <summary>VeRA: one shared random pair plus per-module scaling vectors.</summary>
    Vera,
    /// <summary>VB-LoRA: a shared vector bank plus per-module top-k mixing logits.</summary>
    VbLora,
}

/// <summary>Element type of a tensor as it was uploaded (kept for the lossless codec).</summary>
[JsonConverter(typeof(JsonStringEnumConverter<TensorElementType>))]
public enum TensorElementType
{
    /// <summary>IEEE half.</summary>
    F16,
    /// <summary>bfloat16.</summary>
    BF16,
    /// <summary>IEEE single.</summary>
    F32,
    /// <summary>Unsigned byte (VB-LoRA top-k indices).</summary>
    U8,
    /// <summary>16-bit signed integer (VB-LoRA top-k indices).</summary>
    I16,
    /// <summary>32-bit signed integer (VB-LoRA top-k indices).</summary>
    I32,
    /// <summary>64-bit signed integer (VB-LoRA top-k indices).</summary>
    I64,
}

/// <summary>One adapted projection of the base model.</summary>
/// <param name="Path">Module path in the base model, e.g. <c>transformer.h.3.attn.c_attn</c>.</param>
/// <param name="Module">Layer-relative module name, e.g. <c>attn.c_attn</c> or <c>self_attn.q_proj</c>.</param>
/// <param name="Layer">Transformer block index.</param>
/// <param name="InFeatures">Input width of the projection.</param>
/// <param name="OutFeatures">Output width of the projection.</param>
/// <param name="Rank">Rank r of this module's update.</param>
/// <param name="Scale">Multiplier s in <c>y = W x + s·B(A x)</c> (α/r, α/√r for rsLoRA, 1 for VeRA/VB-LoRA).</param>
public sealed record ModuleSpec(string Path, string Module, int Layer, int InFeatures, int OutFeatures, int Rank, float Scale);

/// <summary>VeRA hyper-parameters needed to materialise A/B.</summary>
public sealed record VeraSpec(int Rank, int MaxIn, int MaxOut);

/// <summary>VB-LoRA hyper-parameters needed to materialise A/B.</summary>
public sealed record VbLoraSpec(int Rank, int NumVectors, int VectorLength, int TopK, bool OnlyTopKWeights);

/// <summary>Everything about an adapter except its tensor values: enough to turn the tensors into per-module A/B.</summary>
public sealed record AdapterManifest
{
    /// <summary>Parameterisation.</summary>
    public required AdapterKind Kind { get; init; }
    /// <summary>Base architecture family (<c>gpt2</c> or <c>llama</c>).</summary>
    public required string Architecture { get; init; }
    /// <summary>Adapted modules in (layer, module) order.</summary>
    public required IReadOnlyList<ModuleSpec> Modules { get; init; }
    /// <summary>VeRA parameters when <see cref="Kind"/> is VeRA.</summary>
    public VeraSpec? Vera { get; init; }
    /// <summary>VB-LoRA parameters when <see cref="Kind"/> is VB-LoRA.</summary>
    public VbLoraSpec? VbLora { get; init; }
}

/// <summary>A named tensor held as float32 (integer tensors are held exactly as floats up to 2^24).</summary>
/// <param name="Name">PEFT key, e.g. <c>base_model.model.transformer.h.0.attn.c_attn.lora_A.weight</c>.</param>
/// <param name="Shape">Row-major shape.</param>
/// <param name="Data">Values.</param>
/// <param name="SourceType">Element type as uploaded.</param>
public sealed record AdapterTensor(string Name, long[] Shape, float[] Data, TensorElementType SourceType)
{
    /// <summary>Number of elements.</summary>
    public long ElementCount => Data.LongLength;
}

/// <summary>An adapter in its native (as-uploaded) parameterisation: manifest plus tensors.</summary>
public sealed record AdapterPayload(AdapterManifest Manifest, IReadOnlyList<AdapterTensor> Tensors)
{
    /// <summary>Finds a tensor by name or returns null.</summary>
    public AdapterTensor? Find(string name)
    {
        foreach (var t in Tensors)
        {
            if (t.Name == name) return t;
        }
        return null;
    }
}
