using System.Text.Json;
using Serving.Checkpoints;

namespace Serving.Inference.Tests.Reference;

/// <summary>
/// An independent float64 forward pass of the Llama-architecture families (Llama with every rotary variant, Qwen3,
/// Mistral, Phi-3, Gemma 2), written for the tests from transformers' modeling code and <c>ROPE_INIT_FUNCTIONS</c>: it
/// reads config.json itself (no <see cref="ModelConfig"/>), shares no code with the engine's graph builder or rotary
/// tables, keeps no KV cache and recomputes the whole sequence on every call.
/// <para>
/// Dynamic NTK follows transformers' rule for tokens fed one at a time: position p is rotated with the frequencies of
/// a sequence of p + 1 tokens (the engine's documented semantics; see <c>RotaryTables</c>).
/// </para>
/// </summary>
internal sealed class FamilyReference
{
    private readonly Func<string, double[]> _w;
    private readonly Dictionary<string, double[]> _cache = [];
    private readonly string _arch;
    private readonly bool _gemma, _qwen3, _phi3, _tied;
    private readonly int _d, _layers, _heads, _kvHeads, _hd, _ffn, _vocab, _maxPos, _rotDim;
    private readonly double _eps, _theta, _scale;
    private readonly double? _softcap, _finalSoftcap;
    private readonly int[] _windows;
    private readonly JsonElement? _rope;
    private readonly string _ropeType;

    /// <param name="deltas">Optional updates added to stored weights by tensor name ([out, in], as stored): a LoRA
    /// merged into the base, the independent path adapter rows are checked against.</param>
    public FamilyReference(string directory, IReadOnlyDictionary<string, double[]>? deltas = null)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(directory, "config.json")));
        var c = doc.RootElement.Clone();
        _arch = c.GetProperty("architectures")[0].GetString()!;
        _gemma = _arch == "Gemma2ForCausalLM";
        _qwen3 = _arch == "Qwen3ForCausalLM";
        _phi3 = _arch == "Phi3ForCausalLM";
        _d = Int(c, "hidden_size")!.Value;
        _layers = Int(c, "num_hidden_layers")!.Value;
        _heads = Int(c, "num_attention_heads")!.Value;
        _kvHeads = Int(c, "num_key_value_heads") ?? _heads;
        _hd = Int(c, "head_dim") ?? _d / _heads;
        _ffn = Int(c, "intermediate_size")!.Value;
        _vocab = Int(c, "vocab_size")!.Value;
        _maxPos = Int(c, "max_position_embeddings")!.Value;
        _eps = Num(c, "rms_norm_eps") ?? 1e-6;
        _theta = Num(c, "rope_theta") ?? 10000;
        _tied = Bool(c, "tie_word_embeddings") ?? _gemma;
        _rotDim = (int)(_hd * (Num(c, "partial_rotary_factor") ?? 1.0));
        _rope = c.TryGetProperty("rope_scaling", out var rs) && rs.ValueKind == JsonValueKind.Object ? rs : null;
        _ropeType = _rope is { } r ? (r.TryGetProperty("rope_type", out var t) ? t : r.GetProperty("type")).GetString()! : "default";
        _scale = _gemma ? 1 / Math.Sqrt(Num(c, "query_pre_attn_scalar") ?? 256) : 1 / Math.Sqrt(_hd);
        _softcap = _gemma ? Num(c, "attn_logit_softcapping") : null;
        _finalSoftcap = _gemma ? Num(c, "final_logit_softcapping") : null;
        var window = Int(c, "sliding_window");
        _windows = new int[_layers];
        for (var l = 0; l < _layers; l++)
        {
            // Mistral and Phi-3 window every layer; Gemma 2 the even ones (layer_types default); Llama none.
            _windows[l] = _arch switch
            {
                "MistralForCausalLM" or "Phi3ForCausalLM" => window ?? 0,
                "Gemma2ForCausalLM" => l % 2 == 0 ? window ?? 0 : 0,
                _ => 0,
            };
        }

        var file = SafetensorsFile.Open(Path.Combine(directory, "model.safetensors"));
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

    /// <summary>Logits [T][V] at every position.</summary>
    public double[][] Forward(IReadOnlyList<int> tokens)
    {
        var t = tokens.Count;
        var emb = _w("model.embed_tokens.weight");
        var x = new double[t][];
        for (var i = 0; i < t; i++)
        {
            x[i] = new double[_d];
            // Gemma scales the embedding by sqrt(hidden_size) (an fp32 value in transformers; exact for the fixtures' d).
            var s = _gemma ? (double)(float)Math.Sqrt(_d) : 1.0;
            for (var j = 0; j < _d; j++) x[i][j] = emb[tokens[i] * _d + j] * s;
        }
        for (var l = 0; l < _layers; l++) x = Block(x, l);
        var logits = new double[t][];
        var head = _tied ? emb : _w("lm_head.weight");
        for (var i = 0; i < t; i++)
        {
            var z = Linear(Norm(x[i], _w("model.norm.weight")), head, _vocab);
            if (_finalSoftcap is { } cap) z = z.Select(v => cap * Math.Tanh(v / cap)).ToArray();
            logits[i] = z;
        }
        return logits;
    }

    private double[][] Block(double[][] x, int l)
    {
        var p = $"model.layers.{l}.";
        int t = x.Length, qd = _heads * _hd, kvd = _kvHeads * _hd;
        var q = new double[t][]; var k = new double[t][]; var v = new double[t][];
        for (var i = 0; i < t; i++)
        {
            var n = Norm(x[i], _w(p + "input_layernorm.weight"));
            if (_phi3)
            {
                var qkv = Linear(n, _w(p + "self_attn.qkv_proj.weight"), qd + 2 * kvd);
                q[i] = qkv[..qd]; k[i] = qkv[qd..(qd + kvd)]; v[i] = qkv[(qd + kvd)..];
            }
            else
            {
                q[i] = Linear(n, _w(p + "self_attn.q_proj.weight"), qd);
                k[i] = Linear(n, _w(p + "self_attn.k_proj.weight"), kvd);
                v[i] = Linear(n, _w(p + "self_attn.v_proj.weight"), kvd);
            }
            if (_qwen3)
            {
                q[i] = HeadNorm(q[i], _heads, _w(p + "self_attn.q_norm.weight"));
                k[i] = HeadNorm(k[i], _kvHeads, _w(p + "self_attn.k_norm.weight"));
            }
            q[i] = Rotate(q[i], i, _heads);
            k[i] = Rotate(k[i], i, _kvHeads);
        }
        var attn = Attention(q, k, v, _windows[l]);
        var y = new double[t][];
        for (var i = 0; i < t; i++)
        {
            var o = Linear(attn[i], _w(p + "self_attn.o_proj.weight"), _d);
            if (_gemma) o = Norm(o, _w(p + "post_attention_layernorm.weight"));
            var h = Add(x[i], o);
            var n = Norm(h, _w(p + (_gemma ? "pre_feedforward_layernorm.weight" : "post_attention_layernorm.weight")));
            double[] gate, up;
            if (_phi3)
            {
                var gu = Linear(n, _w(p + "mlp.gate_up_proj.weight"), 2 * _ffn);
                gate = gu[.._ffn]; up = gu[_ffn..];
            }
            else
            {
                gate = Linear(n, _w(p + "mlp.gate_proj.weight"), _ffn);
                up = Linear(n, _w(p + "mlp.up_proj.weight"), _ffn);
            }
            for (var j = 0; j < _ffn; j++)
            {
                var g = gate[j];
                var act = _gemma
                    ? 0.5 * g * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (g + 0.044715 * g * g * g)))
                    : g / (1 + Math.Exp(-g));
                gate[j] = act * up[j];
            }
            var m = Linear(gate, _w(p + "mlp.down_proj.weight"), _d);
            if (_gemma) m = Norm(m, _w(p + "post_feedforward_layernorm.weight"));
            y[i] = Add(h, m);
        }
        return y;
    }

    private double[][] Attention(double[][] q, double[][] k, double[][] v, int window)
    {
        var t = q.Length;
        var group = _heads / _kvHeads;
        var result = new double[t][];
        for (var i = 0; i < t; i++)
        {
            result[i] = new double[_heads * _hd];
            var lo = window > 0 ? Math.Max(0, i - window + 1) : 0; // transformers: kv_idx > q_idx - sliding_window
            for (var h = 0; h < _heads; h++)
            {
                var kh = h / group;
                var scores = new double[i + 1];
                var max = double.NegativeInfinity;
                for (var j = lo; j <= i; j++)
                {
                    double s = 0;
                    for (var e = 0; e < _hd; e++) s += q[i][h * _hd + e] * k[j][kh * _hd + e];
                    s *= _scale;
                    if (_softcap is { } cap) s = cap * Math.Tanh(s / cap);
                    scores[j] = s;
                    max = Math.Max(max, s);
                }
                double sum = 0;
                for (var j = lo; j <= i; j++) { scores[j] = Math.Exp(scores[j] - max); sum += scores[j]; }
                for (var j = lo; j <= i; j++)
                {
                    for (var e = 0; e < _hd; e++) result[i][h * _hd + e] += scores[j] / sum * v[j][kh * _hd + e];
                }
            }
        }
        return result;
    }

    /// <summary>rotate_half on the first rotary dims of each head, with the variant's frequencies at <paramref name="pos"/>.</summary>
    private double[] Rotate(double[] x, int pos, int heads)
    {
        var (inv, attention) = Frequencies(pos);
        var half = _rotDim / 2;
        var y = (double[])x.Clone();
        for (var h = 0; h < heads; h++)
        {
            for (var i = 0; i < half; i++)
            {
                var angle = pos * inv[i];
                double c = Math.Cos(angle) * attention, s = Math.Sin(angle) * attention;
                double a = x[h * _hd + i], b = x[h * _hd + i + half];
                y[h * _hd + i] = a * c - b * s;
                y[h * _hd + i + half] = b * c + a * s;
            }
        }
        return y;
    }

    /// <summary>Inverse frequencies and cos/sin scale, from the transformers formulas of each rope type.</summary>
    private (double[] Inv, double Attention) Frequencies(int pos)
    {
        var dim = _rotDim;
        var inv = new double[dim / 2];
        var rope = _rope ?? default;
        double F(string key) => rope.GetProperty(key).GetDouble();
        switch (_ropeType)
        {
            case "default":
                for (var i = 0; i < inv.Length; i++) inv[i] = Math.Pow(_theta, -2.0 * i / dim);
                return (inv, 1);
            case "linear":
                for (var i = 0; i < inv.Length; i++) inv[i] = Math.Pow(_theta, -2.0 * i / dim) / F("factor");
                return (inv, 1);
            case "dynamic":
            {
                var seq = Math.Max(pos + 1, _maxPos);
                var factor = F("factor");
                var b = _theta * Math.Pow(factor * seq / _maxPos - (factor - 1), dim / (dim - 2.0));
                for (var i = 0; i < inv.Length; i++) inv[i] = Math.Pow(b, -2.0 * i / dim);
                return (inv, 1);
            }
            case "llama3":
            {
                double factor = F("factor"), low = F("low_freq_factor"), high = F("high_freq_factor"), old = F("original_max_position_embeddings");
                for (var i = 0; i < inv.Length; i++)
                {
                    var f = Math.Pow(_theta, -2.0 * i / dim);
                    var wavelen = 2 * Math.PI / f;
                    if (wavelen < old / high) inv[i] = f;
                    else if (wavelen > old / low) inv[i] = f / factor;
                    else
                    {
                        var smooth = (old / wavelen - low) / (high - low);
                        inv[i] = (1 - smooth) * f / factor + smooth * f;
                    }
                }
                return (inv, 1);
            }
            case "yarn":
            {
                double factor = F("factor"), old = F("original_max_position_embeddings");
                double Correction(double rotations) => dim * Math.Log(old / (rotations * 2 * Math.PI)) / (2 * Math.Log(_theta));
                double lo = Math.Max(Math.Floor(Correction(32)), 0), hi = Math.Min(Math.Ceiling(Correction(1)), dim - 1);
                if (lo == hi) hi += 0.001;
                for (var i = 0; i < inv.Length; i++)
                {
                    var posFreq = Math.Pow(_theta, 2.0 * i / dim);
                    var ramp = Math.Clamp((i - lo) / (hi - lo), 0, 1);
                    // ramp 0: keep the original frequency (extrapolate); 1: divide by factor (interpolate)
                    inv[i] = (1 - ramp) / posFreq + ramp / (factor * posFreq);
                }
                return (inv, 0.1 * Math.Log(factor) + 1);
            }
            default:
                throw new NotSupportedException(_ropeType);
        }
    }

    private double[] Norm(double[] x, double[] w)
    {
        var inv = 1 / Math.Sqrt(x.Select(z => z * z).Average() + _eps);
        return x.Select((z, i) => z * inv * (_gemma ? 1 + w[i] : w[i])).ToArray();
    }

    private double[] HeadNorm(double[] x, int heads, double[] w)
    {
        var y = new double[x.Length];
        for (var h = 0; h < heads; h++)
        {
            var part = x[(h * _hd)..((h + 1) * _hd)];
            Norm(part, w).CopyTo(y, h * _hd);
        }
        return y;
    }

    // W stored [out, in] (nn.Linear)
    private static double[] Linear(double[] x, double[] w, int outDim)
    {
        var y = new double[outDim];
        for (var o = 0; o < outDim; o++)
        {
            double s = 0;
            for (var i = 0; i < x.Length; i++) s += x[i] * w[o * x.Length + i];
            y[o] = s;
        }
        return y;
    }

    private static double[] Add(double[] a, double[] b) => a.Select((z, i) => z + b[i]).ToArray();

    private static int? Int(JsonElement c, string key) => c.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt32() : null;
    private static double? Num(JsonElement c, string key) => c.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : null;
    private static bool? Bool(JsonElement c, string key) => c.TryGetProperty(key, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : null;
}
