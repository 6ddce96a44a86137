using System.Text.RegularExpressions;
using Serving.Checkpoints;

namespace Serving.AdapterStore.Peft;

/// <summary>The adaptable projections of a base model and their widths, derived from its config.json.</summary>
/// <param name="Architecture"><c>gpt2</c>, <c>llama</c> (separate q/k/v and gate/up projections: Llama, Qwen2/3, Mistral,
/// Gemma 2) or <c>phi3</c> (fused <c>qkv_proj</c> and <c>gate_up_proj</c>).</param>
/// <param name="NumLayers">Transformer blocks.</param>
/// <param name="HiddenSize">d.</param>
/// <param name="NumHeads">Query heads.</param>
/// <param name="NumKvHeads">Key/value heads.</param>
/// <param name="HeadDim">Head width.</param>
/// <param name="IntermediateSize">MLP width (GPT-2 n_inner, default 4d).</param>
public sealed partial record BaseModelShape(string Architecture, int NumLayers, int HiddenSize, int NumHeads, int NumKvHeads, int HeadDim, int IntermediateSize)
{
    /// <summary>GPT-2 family id.</summary>
    public const string Gpt2 = "gpt2";
    /// <summary>Llama family id (every Llama-architecture model with separate projections).</summary>
    public const string Llama = "llama";
    /// <summary>Phi-3 family id: q|k|v and gate|up are one module each.</summary>
    public const string Phi3 = "phi3";

    /// <summary>Shape of a checkpoint described by its config.json.</summary>
    public static BaseModelShape FromConfig(ModelConfig config) => new(
        config.Architecture == ModelArchitecture.Gpt2 ? Gpt2 : config.FusedProjections ? Phi3 : Llama,
        config.NumLayers, config.HiddenSize, config.NumHeads, config.NumKvHeads, config.HeadDim, config.IntermediateSize);

    /// <summary>Layer-relative module names that may be adapted, in canonical order.</summary>
    public IReadOnlyList<string> Modules => Architecture switch
    {
        Gpt2 => ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"],
        Phi3 => ["self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"],
        _ => ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"],
    };

    /// <summary>Logical (in, out) widths of a module (y = W x; GPT-2's Conv1D stores W transposed, which A/B do not see).</summary>
    public (int In, int Out)? Widths(string module)
    {
        int d = HiddenSize, q = NumHeads * HeadDim, kv = NumKvHeads * HeadDim, f = IntermediateSize;
        return (Architecture, module) switch
        {
            (Gpt2, "attn.c_attn") => (d, 3 * d),
            (Gpt2, "attn.c_proj") => (d, d),
            (Gpt2, "mlp.c_fc") => (d, f),
            (Gpt2, "mlp.c_proj") => (f, d),
            (Llama, "self_attn.q_proj") => (d, q),
            (Llama, "self_attn.k_proj") => (d, kv),
            (Llama, "self_attn.v_proj") => (d, kv),
            (Llama, "self_attn.o_proj") => (q, d),
            (Llama, "mlp.gate_proj") => (d, f),
            (Llama, "mlp.up_proj") => (d, f),
            (Llama, "mlp.down_proj") => (f, d),
            (Phi3, "self_attn.qkv_proj") => (d, q + 2 * kv),
            (Phi3, "self_attn.o_proj") => (q, d),
            (Phi3, "mlp.gate_up_proj") => (d, 2 * f),
            (Phi3, "mlp.down_proj") => (f, d),
            _ => null,
        };
    }

    /// <summary>Canonical module path, e.g. <c>transformer.h.3.attn.c_attn</c>.</summary>
    public string PathOf(int layer, string module) => Architecture == Gpt2 ? $"transformer.h.{layer}.{module}" : $"model.layers.{layer}.{module}";

    /// <summary>
    /// Splits a module path into layer and module for this architecture (headless paths without
    /// <c>transformer.</c> / <c>model.</c> are accepted); false when the path is no adaptable module of this family.
    /// </summary>
    public bool TryParsePath(string path, out int layer, out string module)
    {
        var m = (Architecture switch { Gpt2 => Gpt2Path(), Phi3 => Phi3Path(), _ => LlamaPath() }).Match(path);
        layer = 0;
        module = "";
        if (!m.Success || !int.TryParse(m.Groups[1].ValueSpan, out layer)) return false;
        module = m.Groups[2].Value;
        return true;
    }

    /// <summary>Which family a path belongs to, if any (to tell "wrong base model" from "bad module name").</summary>
    public static string? FamilyOf(string path) =>
        Gpt2Path().IsMatch(path) ? Gpt2 : LlamaPath().IsMatch(path) ? Llama : Phi3Path().IsMatch(path) ? Phi3 : null;

    [GeneratedRegex(@"^(?:transformer\.)?h\.(\d{1,6})\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)$")]
    private static partial Regex Gpt2Path();

    [GeneratedRegex(@"^(?:model\.)?layers\.(\d{1,6})\.(self_attn\.[qkvo]_proj|mlp\.gate_proj|mlp\.up_proj|mlp\.down_proj)$")]
    private static partial Regex LlamaPath();

    [GeneratedRegex(@"^(?:model\.)?layers\.(\d{1,6})\.(self_attn\.qkv_proj|self_attn\.o_proj|mlp\.gate_up_proj|mlp\.down_proj)$")]
    private static partial Regex Phi3Path();
}
