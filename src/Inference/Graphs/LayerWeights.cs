using Serving.Checkpoints;

namespace Serving.Inference.Graphs;

/// <summary>
/// One transformer block's weights in the engine's orientation: every projection as [in, out] for <c>MatMul</c>,
/// q|k|v fused into one projection. Read once from the checkpoint; the arrays become graph initializers.
/// </summary>
internal sealed class LayerWeights
{
    public required float[] Norm1Weight { get; init; }
    public float[]? Norm1Bias { get; init; }
    public required float[] QkvWeight { get; init; }      // [d, (H + 2KV)·hd]
    public float[]? QkvBias { get; init; }
    public required float[] OutWeight { get; init; }      // [H·hd, d]
    public float[]? OutBias { get; init; }
    public required float[] Norm2Weight { get; init; }
    public float[]? Norm2Bias { get; init; }
    public required float[] UpWeight { get; init; }       // GPT-2: c_fc [d, F]; Llama: gate|up [d, 2F]
    public float[]? UpBias { get; init; }
    public required float[] DownWeight { get; init; }     // [F, d]
    public float[]? DownBias { get; init; }

    /// <summary>Qwen3: RMSNorm weights [head_dim] over each head of q and of k (null otherwise).</summary>
    public float[]? QNorm { get; init; }
    public float[]? KNorm { get; init; }

    /// <summary>Gemma 2: the norm on the attention output and the one on the MLP output (Norm2 is the pre-MLP norm).</summary>
    public float[]? PostAttnNorm { get; init; }
    public float[]? PostFfnNorm { get; init; }

    /// <summary>The projections in a quantised format (null: fp32 MatMuls); set once by <see cref="Quantize"/>.</summary>
    public QuantizedProjections? Quantized { get; private set; }

    /// <summary>
    /// Quantises the four projections (q|k|v, out, up (gate|up), down) for <c>MatMulNBits</c>. The fp32 arrays stay
    /// (norms, the early-exit criteria's view of the FFN, and references read them); the graphs use the quantised form.
    /// </summary>
    public void Quantize(ModelConfig c, WeightFormat format, int blockSize, int accuracyLevel)
    {
        if (format == WeightFormat.Fp32) return;
        int d = c.HiddenSize, q = c.NumHeads * c.HeadDim;
        QuantizedWeight Of(float[] w, int k) => WeightQuantizer.Quantize(w, k, w.Length / k, format, blockSize);
        var down = Of(DownWeight, DownWeight.Length / d);
        Quantized = new QuantizedProjections(Of(QkvWeight, d), Of(OutWeight, q), Of(UpWeight, d), down, accuracyLevel);
    }

    public static LayerWeights Read(CheckpointFolder ckpt, int layer)
    {
        var c = ckpt.Config;
        return c.Architecture == ModelArchitecture.Gpt2 ? ReadGpt2(ckpt, c, layer) : ReadLlama(ckpt, c, layer);
    }

    private static LayerWeights ReadGpt2(CheckpointFolder ckpt, ModelConfig c, int i)
    {
        long d = c.HiddenSize, f = c.IntermediateSize;
        var p = $"transformer.h.{i}.";
        return new LayerWeights
        {
            Norm1Weight = ckpt.ReadFloat32(p + "ln_1.weight", d),
            Norm1Bias = ckpt.ReadFloat32(p + "ln_1.bias", d),
            QkvWeight = ckpt.ReadFloat32(p + "attn.c_attn.weight", d, 3 * d),
            QkvBias = ckpt.ReadFloat32(p + "attn.c_attn.bias", 3 * d),
            OutWeight = ckpt.ReadFloat32(p + "attn.c_proj.weight", d, d),
            OutBias = ckpt.ReadFloat32(p + "attn.c_proj.bias", d),
            Norm2Weight = ckpt.ReadFloat32(p + "ln_2.weight", d),
            Norm2Bias = ckpt.ReadFloat32(p + "ln_2.bias", d),
            UpWeight = ckpt.ReadFloat32(p + "mlp.c_fc.weight", d, f),
            UpBias = ckpt.ReadFloat32(p + "mlp.c_fc.bias", f),
            DownWeight = ckpt.ReadFloat32(p + "mlp.c_proj.weight", f, d),
            DownBias = ckpt.ReadFloat32(p + "mlp.c_proj.bias", d),
        };
    }

    private static LayerWeights ReadLlama(CheckpointFolder ckpt, ModelConfig c, int i)
    {
        int d = c.HiddenSize, f = c.IntermediateSize, q = c.NumHeads * c.HeadDim, kv = c.NumKvHeads * c.HeadDim;
        var p = $"model.layers.{i}.";
        float[] qkv, gateUp;
        if (c.FusedProjections)
        {
            // Phi-3 stores q|k|v and gate|up already fused, in the engine's column order.
            qkv = TransposeConcat(d, (ckpt.ReadFloat32(p + "self_attn.qkv_proj.weight", q + 2 * kv, d), q + 2 * kv));
            gateUp = TransposeConcat(d, (ckpt.ReadFloat32(p + "mlp.gate_up_proj.weight", 2 * f, d), 2 * f));
        }
        else
        {
            var wq = ckpt.ReadFloat32(p + "self_attn.q_proj.weight", q, d);
            var wk = ckpt.ReadFloat32(p + "self_attn.k_proj.weight", kv, d);
            var wv = ckpt.ReadFloat32(p + "self_attn.v_proj.weight", kv, d);
            qkv = TransposeConcat(d, (wq, q), (wk, kv), (wv, kv));
            var gate = ckpt.ReadFloat32(p + "mlp.gate_proj.weight", f, d);
            var up = ckpt.ReadFloat32(p + "mlp.up_proj.weight", f, d);
            gateUp = TransposeConcat(d, (gate, f), (up, f));
        }
        float[]? qkvBias = null;
        if (c.AttentionBias)
        {
            qkvBias = [.. ckpt.ReadFloat32(p + "self_attn.q_proj.bias", q), .. ckpt.ReadFloat32(p + "self_attn.k_proj.bias", kv), .. ckpt.ReadFloat32(p + "self_attn.v_proj.bias", kv)];
        }
        return new LayerWeights
        {
            Norm1Weight = ReadNorm(ckpt, c, p + "input_layernorm.weight", d),
            QkvWeight = qkv,
            QkvBias = qkvBias,
            OutWeight = TransposeConcat(q, (ckpt.ReadFloat32(p + "self_attn.o_proj.weight", d, q), d)),
            OutBias = c.AttentionBias && ckpt.Contains(p + "self_attn.o_proj.bias") ? ckpt.ReadFloat32(p + "self_attn.o_proj.bias", d) : null,
            Norm2Weight = ReadNorm(ckpt, c, p + (c.SandwichNorms ? "pre_feedforward_layernorm.weight" : "post_attention_layernorm.weight"), d),
            UpWeight = gateUp,
            UpBias = c.MlpBias ? [.. ckpt.ReadFloat32(p + "mlp.gate_proj.bias", f), .. ckpt.ReadFloat32(p + "mlp.up_proj.bias", f)] : null,
            DownWeight = TransposeConcat(f, (ckpt.ReadFloat32(p + "mlp.down_proj.weight", d, f), d)),
            DownBias = c.MlpBias ? ckpt.ReadFloat32(p + "mlp.down_proj.bias", d) : null,
            QNorm = c.QkNorm ? ReadNorm(ckpt, c, p + "self_attn.q_norm.weight", c.HeadDim) : null,
            KNorm = c.QkNorm ? ReadNorm(ckpt, c, p + "self_attn.k_norm.weight", c.HeadDim) : null,
            PostAttnNorm = c.SandwichNorms ? ReadNorm(ckpt, c, p + "post_attention_layernorm.weight", d) : null,
            PostFfnNorm = c.SandwichNorms ? ReadNorm(ckpt, c, p + "post_feedforward_layernorm.weight", d) : null,
        };
    }

    /// <summary>An RMSNorm weight as the graph uses it: the stored one plus <see cref="ModelConfig.NormWeightOffset"/> (Gemma's 1 + w, in fp32 as transformers adds it).</summary>
    internal static float[] ReadNorm(CheckpointFolder ckpt, ModelConfig c, string name, int width)
    {
        var w = ckpt.ReadFloat32(name, width);
        if (c.NormWeightOffset != 0)
        {
            for (var i = 0; i < w.Length; i++) w[i] += c.NormWeightOffset;
        }
        return w;
    }

    /// <summary>Turns [out_i, in] matrices into one [in, Σ out_i] matrix (column blocks in order).</summary>
    internal static float[] TransposeConcat(int inDim, params (float[] W, int Out)[] parts)
    {
        var total = parts.Sum(p => p.Out);
        var result = new float[inDim * total];
        var col = 0;
        foreach (var (w, outDim) in parts)
        {
            for (var o = 0; o < outDim; o++)
            {
                var row = o * inDim;
                for (var i = 0; i < inDim; i++)
                {
                    result[i * total + col + o] = w[row + i];
                }
            }
            col += outDim;
        }
        return result;
    }
}

/// <summary>One layer's projections in <c>MatMulNBits</c>'s layout, and the accuracy level the graphs run them at.</summary>
internal sealed record QuantizedProjections(QuantizedWeight Qkv, QuantizedWeight Out, QuantizedWeight Up, QuantizedWeight Down, int AccuracyLevel)
{
    public long Bytes => Qkv.Bytes + Out.Bytes + Up.Bytes + Down.Bytes;
}
