using Serving.Checkpoints;

namespace Serving.Inference.Tests.Reference;

/// <summary>
/// An independent float64 forward pass written straight from the GPT-2 and Llama definitions (no KV cache, no ONNX,
/// no code shared with the engine's graph builder): it recomputes the whole sequence every call.
/// </summary>
internal sealed class ReferenceModel
{
    private readonly ModelConfig _c;
    private readonly Func<string, double[]> _w;
    private readonly Func<string, bool> _has;
    private readonly Dictionary<string, double[]> _cache = [];

    /// <param name="deltas">Optional updates added to stored weights by tensor name, in the checkpoint's own layout
    /// (a LoRA merged into the base: the independent path adapter rows are checked against).</param>
    public ReferenceModel(string directory, IReadOnlyDictionary<string, double[]>? deltas = null)
    {
        _c = ModelConfig.Load(Path.Combine(directory, "config.json"));
        var file = SafetensorsFile.Open(Path.Combine(directory, "model.safetensors"));
        _has = file.Tensors.ContainsKey;
        _w = name =>
        {
            if (!_cache.TryGetValue(name, out var v))
            {
                v = file.ReadFloat32(name).Select(x => (double)x).ToArray();
                if (deltas is not null && deltas.TryGetValue(name, out var delta))
                {
                    if (delta.Length != v.Length) throw new ArgumentException($"delta for {name} has {delta.Length} values, the weight {v.Length}");
                    for (var i = 0; i < v.Length; i++) v[i] += delta[i];
                }
                _cache[name] = v;
            }
            return v;
        };
    }

    /// <summary>Logits [T, V] for every position, and hidden states [L+1][T·d] (embedding, after each block).</summary>
    public (double[][] Logits, double[][] Hidden) Forward(IReadOnlyList<int> tokens) => Forward(tokens, null);

    /// <summary>
    /// Early exit as CALM defines it: position i runs blocks [0, exitLayers[i]) and then keeps its hidden state; every
    /// block it skips still gets its keys and values, computed from that kept state (state propagation), so later
    /// positions attend to a complete cache. Logits of position i come from the head on its last hidden state. Hidden
    /// states are reported as each position holds them after each block.
    /// </summary>
    public (double[][] Logits, double[][] Hidden) Forward(IReadOnlyList<int> tokens, IReadOnlyList<int>? exitLayers)
    {
        var t = tokens.Count;
        int d = _c.HiddenSize;
        var gpt2 = _c.Architecture == ModelArchitecture.Gpt2;
        var x = new double[t][];
        for (var i = 0; i < t; i++)
        {
            x[i] = new double[d];
            var emb = _w(gpt2 ? "transformer.wte.weight" : "model.embed_tokens.weight");
            for (var j = 0; j < d; j++)
            {
                x[i][j] = emb[tokens[i] * d + j] + (gpt2 ? _w("transformer.wpe.weight")[i * d + j] : 0);
            }
        }
        var hidden = new List<double[]> { Flatten(x) };
        for (var l = 0; l < _c.NumLayers; l++)
        {
            var runs = Enumerable.Range(0, t).Select(i => exitLayers is null || l < exitLayers[i]).ToArray();
            x = gpt2 ? Gpt2Block(x, l, runs) : LlamaBlock(x, l, runs);
            hidden.Add(Flatten(x));
        }
        var logits = new double[t][];
        for (var i = 0; i < t; i++)
        {
            var n = gpt2 ? LayerNorm(x[i], _w("transformer.ln_f.weight"), _w("transformer.ln_f.bias")) : RmsNorm(x[i], _w("model.norm.weight"));
            var head = gpt2 || _c.TieWordEmbeddings ? _w(gpt2 ? "transformer.wte.weight" : "model.embed_tokens.weight") : _w("lm_head.weight");
            logits[i] = LinearOutIn(n, head, _c.VocabSize);
        }
        return (logits, hidden.ToArray());
    }

    private double[][] Gpt2Block(double[][] x, int l, bool[] runs)
    {
        var p = $"transformer.h.{l}.";
        int d = _c.HiddenSize, t = x.Length;
        var q = new double[t][]; var k = new double[t][]; var v = new double[t][];
        for (var i = 0; i < t; i++)
        {
            var n = LayerNorm(x[i], _w(p + "ln_1.weight"), _w(p + "ln_1.bias"));
            var qkv = LinearInOut(n, _w(p + "attn.c_attn.weight"), 3 * d, _w(p + "attn.c_attn.bias"));
            q[i] = qkv[..d]; k[i] = qkv[d..(2 * d)]; v[i] = qkv[(2 * d)..];
        }
        var attn = Attention(q, k, v, _c.NumHeads, _c.NumHeads, _c.HeadDim);
        var x2 = new double[t][];
        for (var i = 0; i < t; i++)
        {
            if (!runs[i])
            {
                x2[i] = x[i];
                continue;
            }
            var o = LinearInOut(attn[i], _w(p + "attn.c_proj.weight"), d, _w(p + "attn.c_proj.bias"));
            x2[i] = Add(x[i], o);
            var n = LayerNorm(x2[i], _w(p + "ln_2.weight"), _w(p + "ln_2.bias"));
            var h = LinearInOut(n, _w(p + "mlp.c_fc.weight"), _c.IntermediateSize, _w(p + "mlp.c_fc.bias"));
            for (var j = 0; j < h.Length; j++)
            {
                var z = h[j];
                h[j] = 0.5 * z * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (z + 0.044715 * z * z * z)));
            }
            x2[i] = Add(x2[i], LinearInOut(h, _w(p + "mlp.c_proj.weight"), d, _w(p + "mlp.c_proj.bias")));
        }
        return x2;
    }

    private double[][] LlamaBlock(double[][] x, int l, bool[] runs)
    {
        var p = $"model.layers.{l}.";
        int d = _c.HiddenSize, t = x.Length, hd = _c.HeadDim, h = _c.NumHeads, kvh = _c.NumKvHeads;
        var q = new double[t][]; var k = new double[t][]; var v = new double[t][];
        for (var i = 0; i < t; i++)
        {
            var n = RmsNorm(x[i], _w(p + "input_layernorm.weight"));
            q[i] = Rope(LinearOutIn(n, _w(p + "self_attn.q_proj.weight"), h * hd, Bias(p + "self_attn.q_proj.bias")), i, h);
            k[i] = Rope(LinearOutIn(n, _w(p + "self_attn.k_proj.weight"), kvh * hd, Bias(p + "self_attn.k_proj.bias")), i, kvh);
            v[i] = LinearOutIn(n, _w(p + "self_attn.v_proj.weight"), kvh * hd, Bias(p + "self_attn.v_proj.bias"));
        }
        var attn = Attention(q, k, v, h, kvh, hd);
        var x2 = new double[t][];
        for (var i = 0; i < t; i++)
        {
            if (!runs[i])
            {
                x2[i] = x[i];
                continue;
            }
            x2[i] = Add(x[i], LinearOutIn(attn[i], _w(p + "self_attn.o_proj.weight"), d, OptionalBias(p + "self_attn.o_proj.bias")));
            var n = RmsNorm(x2[i], _w(p + "post_attention_layernorm.weight"));
            var gate = LinearOutIn(n, _w(p + "mlp.gate_proj.weight"), _c.IntermediateSize);
            var up = LinearOutIn(n, _w(p + "mlp.up_proj.weight"), _c.IntermediateSize);
            for (var j = 0; j < gate.Length; j++) gate[j] = gate[j] / (1 + Math.Exp(-gate[j])) * up[j];
            x2[i] = Add(x2[i], LinearOutIn(gate, _w(p + "mlp.down_proj.weight"), d));
        }
        return x2;
    }

    /// <summary>The keys and values block <paramref name="layer"/> writes for input <paramref name="hidden"/> at <paramref name="position"/> (RoPE on the keys).</summary>
    public (double[] Key, double[] Value) KeyValue(int layer, double[] hidden, int position)
    {
        int d = _c.HiddenSize, hd = _c.HeadDim, kvh = _c.NumKvHeads;
        if (_c.Architecture == ModelArchitecture.Gpt2)
        {
            var p = $"transformer.h.{layer}.";
            var n = LayerNorm(hidden, _w(p + "ln_1.weight"), _w(p + "ln_1.bias"));
            var qkv = LinearInOut(n, _w(p + "attn.c_attn.weight"), 3 * d, _w(p + "attn.c_attn.bias"));
            return (qkv[d..(2 * d)], qkv[(2 * d)..]);
        }
        var pl = $"model.layers.{layer}.";
        var nl = RmsNorm(hidden, _w(pl + "input_layernorm.weight"));
        return (Rope(LinearOutIn(nl, _w(pl + "self_attn.k_proj.weight"), kvh * hd, Bias(pl + "self_attn.k_proj.bias")), position, kvh),
            LinearOutIn(nl, _w(pl + "self_attn.v_proj.weight"), kvh * hd, Bias(pl + "self_attn.v_proj.bias")));
    }

    private double[]? Bias(string name) => _c.AttentionBias ? _w(name) : null;

    /// <summary>A bias Llama's <c>attention_bias</c> gives and Qwen2's does not (o_proj): read when the checkpoint has it.</summary>
    private double[]? OptionalBias(string name) => _c.AttentionBias && _has(name) ? _w(name) : null;

    // HF rotate_half: pairs (i, i + hd/2) within each head.
    private double[] Rope(double[] x, int pos, int heads)
    {
        var hd = _c.HeadDim;
        var half = hd / 2;
        var y = (double[])x.Clone();
        for (var hh = 0; hh < heads; hh++)
        {
            for (var i = 0; i < half; i++)
            {
                var angle = pos / Math.Pow(_c.RopeTheta, 2.0 * i / hd);
                double c = Math.Cos(angle), s = Math.Sin(angle);
                double a = x[hh * hd + i], b = x[hh * hd + i + half];
                y[hh * hd + i] = a * c - b * s;
                y[hh * hd + i + half] = b * c + a * s;
            }
        }
        return y;
    }

    private static double[][] Attention(double[][] q, double[][] k, double[][] v, int heads, int kvHeads, int hd)
    {
        var t = q.Length;
        var group = heads / kvHeads;
        var result = new double[t][];
        for (var i = 0; i < t; i++)
        {
            result[i] = new double[heads * hd];
            for (var h = 0; h < heads; h++)
            {
                var kh = h / group;
                var scores = new double[i + 1];
                var max = double.NegativeInfinity;
                for (var j = 0; j <= i; j++)
                {
                    double s = 0;
                    for (var e = 0; e < hd; e++) s += q[i][h * hd + e] * k[j][kh * hd + e];
                    scores[j] = s / Math.Sqrt(hd);
                    max = Math.Max(max, scores[j]);
                }
                double sum = 0;
                for (var j = 0; j <= i; j++) { scores[j] = Math.Exp(scores[j] - max); sum += scores[j]; }
                for (var j = 0; j <= i; j++)
                {
                    for (var e = 0; e < hd; e++) result[i][h * hd + e] += scores[j] / sum * v[j][kh * hd + e];
                }
            }
        }
        return result;
    }

    private double[] LayerNorm(double[] x, double[] g, double[] b)
    {
        var mean = x.Average();
        var variance = x.Select(z => (z - mean) * (z - mean)).Average();
        var inv = 1 / Math.Sqrt(variance + _c.NormEps);
        return x.Select((z, i) => (z - mean) * inv * g[i] + b[i]).ToArray();
    }

    private double[] RmsNorm(double[] x, double[] g)
    {
        var inv = 1 / Math.Sqrt(x.Select(z => z * z).Average() + _c.NormEps);
        return x.Select((z, i) => z * inv * g[i]).ToArray();
    }

    // W stored [in, out] (GPT-2 Conv1D)
    private static double[] LinearInOut(double[] x, double[] w, int outDim, double[]? bias = null)
    {
        var y = new double[outDim];
        for (var o = 0; o < outDim; o++)
        {
            double s = bias?[o] ?? 0;
            for (var i = 0; i < x.Length; i++) s += x[i] * w[i * outDim + o];
            y[o] = s;
        }
        return y;
    }

    // W stored [out, in] (nn.Linear)
    private static double[] LinearOutIn(double[] x, double[] w, int outDim, double[]? bias = null)
    {
        var y = new double[outDim];
        for (var o = 0; o < outDim; o++)
        {
            double s = bias?[o] ?? 0;
            for (var i = 0; i < x.Length; i++) s += x[i] * w[o * x.Length + i];
            y[o] = s;
        }
        return y;
    }

    private static double[] Add(double[] a, double[] b) => a.Select((z, i) => z + b[i]).ToArray();

    private static double[] Flatten(double[][] x) => x.SelectMany(r => r).ToArray();
}
