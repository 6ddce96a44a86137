using Serving.AdapterStore.Peft;
using Serving.Checkpoints;

namespace Serving.AdapterStore.Tests.Peft;

public sealed class PeftAdapterReaderTests
{
    /// <summary>Dense ΔW [out, in] of a materialised module: Scale · B · A.</summary>
    internal static double[] Dense(LoraWeights w)
    {
        var d = new double[w.OutFeatures * w.InFeatures];
        for (int o = 0; o < w.OutFeatures; o++)
            for (int i = 0; i < w.InFeatures; i++)
            {
                double s = 0;
                for (int k = 0; k < w.Rank; k++) s += (double)w.B[o * w.Rank + k] * w.A[k * w.InFeatures + i];
                d[o * w.InFeatures + i] = w.Scale * s;
            }
        return d;
    }

    private static void AssertClose(double[] expected, double[] actual, double tol = 1e-5)
    {
        Assert.Equal(expected.Length, actual.Length);
        double maxAbs = expected.Max(Math.Abs);
        for (int i = 0; i < expected.Length; i++)
        {
            if (Math.Abs(expected[i] - actual[i]) > tol * Math.Max(1, maxAbs)) Assert.Fail($"element {i}: expected {expected[i]}, got {actual[i]}");
        }
        Assert.True(maxAbs > 0, "the update must not be trivially zero");
    }

    [Fact]
    public void Read_Gpt2Lora_MaterialisedDeltaEqualsAlphaOverRTimesBA()
    {
        var folder = PeftFolders.Gpt2Lora();
        var v = PeftAdapterReader.Read(folder.ConfigBytes, folder.Safetensors, PeftFolders.Gpt2);
        var adapter = AdapterMaterializer.Materialize(v.Payload);
        Assert.Equal(8, adapter.Modules.Count); // 'c_proj' selects attn.c_proj and mlp.c_proj
        foreach (var m in adapter.Modules)
        {
            string p = $"base_model.model.transformer.h.{m.Layer}.{m.Module}";
            var (_, a) = folder.Tensors[p + ".lora_A.weight"];
            var (_, b) = folder.Tensors[p + ".lora_B.weight"];
            int r = 4, n = m.InFeatures, o = m.OutFeatures;
            var expected = new double[o * n];
            for (int y = 0; y < o; y++)
                for (int x = 0; x < n; x++)
                {
                    double s = 0;
                    for (int k = 0; k < r; k++) s += (double)b[y * r + k] * a[k * n + x];
                    expected[y * n + x] = 16.0 / r * s;
                }
            AssertClose(expected, Dense(m));
        }
        Assert.Equal((64, 256), (adapter.Find(1, "mlp.c_fc")!.InFeatures, adapter.Find(1, "mlp.c_fc")!.OutFeatures));
        Assert.Equal((256, 64), (adapter.Find(1, "mlp.c_proj")!.InFeatures, adapter.Find(1, "mlp.c_proj")!.OutFeatures));
    }

    [Fact]
    public void Read_HeadlessGpt2ModelKeys_AreAcceptedAndMaterialised()
    {
        var good = PeftFolders.Gpt2Lora();
        var entries = good.Tensors.Select(kv => SafetensorsWriter.Entry.F32(kv.Key.Replace("base_model.model.transformer.", "base_model.model."), kv.Value.Shape, kv.Value.Data)).ToList();
        var v = PeftAdapterReader.Read(good.ConfigBytes, SafetensorsWriter.ToBytes(entries), PeftFolders.Gpt2);
        var adapter = AdapterMaterializer.Materialize(v.Payload);
        Assert.Equal(8, adapter.Modules.Count);
        Assert.Equal(good.Tensors["base_model.model.transformer.h.1.mlp.c_fc.lora_B.weight"].Data, adapter.Find(1, "mlp.c_fc")!.B);
    }

    [Fact]
    public void Read_Fp16Upload_KeepsDtypeAndValues()
    {
        var folder = PeftFolders.Gpt2Lora(dtype: SafetensorsDType.F16);
        var v = PeftAdapterReader.Read(folder.ConfigBytes, folder.Safetensors, PeftFolders.Gpt2);
        Assert.All(v.Payload.Tensors, t => Assert.Equal(TensorElementType.F16, t.SourceType));
        var t0 = v.Payload.Tensors[0];
        Assert.Equal(folder.Tensors[t0.Name].Data.Select(x => (float)(Half)x), t0.Data);
    }

    [Fact]
    public void Read_RankPattern_OverridesRankAndScale()
    {
        var folder = PeftFolders.Gpt2Lora(rankPatternFc: true);
        var adapter = AdapterMaterializer.Materialize(PeftAdapterReader.Read(folder.ConfigBytes, folder.Safetensors, PeftFolders.Gpt2).Payload);
        var fc = adapter.Find(0, "mlp.c_fc")!;
        Assert.Equal(2, fc.Rank);
        Assert.Equal(8f, fc.Scale);
        Assert.Equal(4f, adapter.Find(0, "attn.c_attn")!.Scale);
    }

    [Fact]
    public void Read_QwenLoraBf16RsLoraRegexTargets_UsesPerModuleWidthsAndSqrtScale()
    {
        var folder = PeftFolders.LlamaLora();
        var v = PeftAdapterReader.Read(folder.ConfigBytes, folder.Safetensors, PeftFolders.Llama);
        var adapter = AdapterMaterializer.Materialize(v.Payload);
        Assert.Equal(14, adapter.Modules.Count);
        Assert.Equal(16, adapter.Find(0, "self_attn.k_proj")!.OutFeatures); // 1 kv head × 16
        Assert.Equal(64, adapter.Find(0, "self_attn.q_proj")!.OutFeatures);
        Assert.Equal((float)(16 / Math.Sqrt(8)), adapter.Find(1, "mlp.down_proj")!.Scale);
        Assert.All(v.Payload.Tensors, t => Assert.Equal(TensorElementType.BF16, t.SourceType));
        var m = adapter.Find(1, "self_attn.v_proj")!;
        var (_, a) = folder.Tensors["base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight"];
        Assert.Equal(a, m.A);
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void Read_Vera_MaterialisedDeltaEqualsScaledSlicedProjections(string arch)
    {
        var shape = arch == "gpt2" ? PeftFolders.Gpt2 : PeftFolders.Llama;
        var folder = PeftFolders.Vera(shape);
        var adapter = AdapterMaterializer.Materialize(PeftAdapterReader.Read(folder.ConfigBytes, folder.Safetensors, shape).Payload);
        Assert.Equal(shape.NumLayers * shape.Modules.Count, adapter.Modules.Count);
        var (sa, va) = folder.Tensors["base_model.vera_A"];
        var (_, vb) = folder.Tensors["base_model.vera_B"];
        int r = (int)sa[0], maxIn = (int)sa[1];
        foreach (var m in adapter.Modules)
        {
            string p = $"base_model.model.{shape.PathOf(m.Layer, m.Module)}";
            var lb = folder.Tensors[p + ".vera_lambda_b"].Data;
            var ld = folder.Tensors[p + ".vera_lambda_d"].Data;
            var expected = new double[m.OutFeatures * m.InFeatures];
            // ΔW = (λ_b ⊙ B[:out]) (λ_d ⊙ A[:, :in])
            for (int o = 0; o < m.OutFeatures; o++)
                for (int i = 0; i < m.InFeatures; i++)
                {
                    double s = 0;
                    for (int k = 0; k < r; k++) s += (double)lb[o] * vb[o * r + k] * ld[k] * va[k * maxIn + i];
                    expected[o * m.InFeatures + i] = s;
                }
            AssertClose(expected, Dense(m));
        }
    }

    [Theory]
    [InlineData("gpt2", false)]
    [InlineData("gpt2", true)]
    [InlineData("llama", false)]
    [InlineData("llama", true)]
    public void Read_VbLora_MaterialisedDeltaEqualsBankMixture(string arch, bool topkOnly)
    {
        var shape = arch == "gpt2" ? PeftFolders.Gpt2 : PeftFolders.Llama;
        var folder = PeftFolders.VbLora(shape, topkOnly);
        var adapter = AdapterMaterializer.Materialize(PeftAdapterReader.Read(folder.ConfigBytes, folder.Safetensors, shape).Payload);
        var (_, bank) = folder.Tensors["base_model.vblora_vector_bank"];
        const int nv = 32, len = 16, k = 2, r = 4;
        float[] SubVector(string baseName, long row)
        {
            (int Index, double Weight)[] picks;
            if (topkOnly)
            {
                var idx = folder.Tensors[baseName + "_topk_indices"].Data;
                var w = folder.Tensors[baseName + "_topk_weights"].Data;
                double w0 = w[row];
                picks = [((int)idx[row * k], w0), ((int)idx[row * k + 1], 1 - w0)];
            }
            else
            {
                var logits = folder.Tensors[baseName].Data;
                var top = Enumerable.Range(0, nv).Select(v => (v, l: (double)logits[row * nv + v])).OrderByDescending(t => t.l).Take(k).ToArray();
                double z = top.Sum(t => Math.Exp(t.l));
                picks = top.Select(t => (t.v, Math.Exp(t.l) / z)).ToArray();
            }
            var vec = new float[len];
            foreach (var (index, weight) in picks)
                for (int x = 0; x < len; x++) vec[x] += (float)(weight * bank[index * len + x]);
            return vec;
        }
        foreach (var m in adapter.Modules)
        {
            string p = $"base_model.model.{shape.PathOf(m.Layer, m.Module)}";
            int inT = m.InFeatures / len, outT = m.OutFeatures / len;
            var a = new double[r, m.InFeatures];
            var b = new double[m.OutFeatures, r];
            for (int q = 0; q < r; q++)
                for (int t = 0; t < inT; t++)
                {
                    var v = SubVector(p + ".vblora_logits_A", q * inT + t);
                    for (int x = 0; x < len; x++) a[q, t * len + x] = v[x];
                }
            for (int t = 0; t < outT; t++)
                for (int q = 0; q < r; q++)
                {
                    var v = SubVector(p + ".vblora_logits_B", t * r + q);
                    for (int x = 0; x < len; x++) b[t * len + x, q] = v[x];
                }
            var expected = new double[m.OutFeatures * m.InFeatures];
            for (int o = 0; o < m.OutFeatures; o++)
                for (int i = 0; i < m.InFeatures; i++)
                {
                    double s = 0;
                    for (int q = 0; q < r; q++) s += b[o, q] * a[q, i];
                    expected[o * m.InFeatures + i] = s;
                }
            AssertClose(expected, Dense(m), 1e-4);
        }
    }

    public static TheoryData<string, string> Malformed => new()
    {
        { "bad_json", AdapterErrors.ConfigInvalidJson },
        { "unknown_peft_type", AdapterErrors.PeftTypeUnsupported },
        { "dora", AdapterErrors.DoraUnsupported },
        { "modules_to_save", AdapterErrors.FullTensorUnsupported },
        { "classifier_tensor", AdapterErrors.FullTensorUnsupported },
        { "truncated", AdapterErrors.SafetensorsInvalid },
        { "duplicate", AdapterErrors.TensorDuplicate },
        { "bad_module", AdapterErrors.UnknownModule },
        { "wrong_base", AdapterErrors.BaseModelMismatch },
        { "layer_out_of_range", AdapterErrors.LayerOutOfRange },
        { "wrong_shape", AdapterErrors.ShapeMismatch },
        { "rank_mismatch_ab", AdapterErrors.RankMismatch },
        { "rank_mismatch_config", AdapterErrors.RankMismatch },
        { "nan", AdapterErrors.NotFinite },
        { "int_dtype", AdapterErrors.DtypeUnsupported },
        { "unpaired", AdapterErrors.Unpaired },
        { "not_targeted", AdapterErrors.NotTargeted },
        { "vera_no_projection", AdapterErrors.VeraProjectionMissing },
        { "bias", AdapterErrors.BiasUnsupported },
        { "empty", AdapterErrors.Empty },
        { "overlapping_offsets", AdapterErrors.SafetensorsInvalid },
        { "offset_out_of_range", AdapterErrors.SafetensorsInvalid },
        { "header_length_overflow", AdapterErrors.SafetensorsInvalid },
        { "header_not_utf8", AdapterErrors.SafetensorsInvalid },
    };

    /// <summary>Builds one malformed upload per case name (shared with the HTTP tests).</summary>
    internal static (byte[] Config, byte[] Weights) MalformedCase(string name)
    {
        var good = PeftFolders.Gpt2Lora();
        const string a0 = "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight";
        const string b0 = "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight";
        byte[] Weights(Func<string, (long[] Shape, float[] Data), IEnumerable<SafetensorsWriter.Entry>> edit) =>
            SafetensorsWriter.ToBytes(good.Tensors.SelectMany(kv => edit(kv.Key, kv.Value)).ToList());
        IEnumerable<SafetensorsWriter.Entry> Keep(string n, (long[] Shape, float[] Data) t) => [SafetensorsWriter.Entry.F32(n, t.Shape, t.Data)];
        var rng = new Random(5);
        return name switch
        {
            "bad_json" => ("{\"peft_type\": \"LORA\", "u8.ToArray(), good.Safetensors),
            "unknown_peft_type" => (good.ConfigBytes.Replace("\"peft_type\": \"LORA\"", "\"peft_type\": \"IA3\""), good.Safetensors),
            "dora" => (good.ConfigBytes.Replace("\"use_dora\": false", "\"use_dora\": true"), good.Safetensors),
            "modules_to_save" => (good.ConfigBytes.Replace("\"modules_to_save\": null", "\"modules_to_save\": [\"lm_head\"]"), good.Safetensors),
            "classifier_tensor" => (good.ConfigBytes, Weights((n, t) => n == a0 ? Keep(n, t).Append(SafetensorsWriter.Entry.F32("base_model.model.score.weight", [2, 64], new float[128])) : Keep(n, t))),
            "truncated" => (good.ConfigBytes, good.Safetensors[..(good.Safetensors.Length - 100)]),
            "duplicate" => (good.ConfigBytes, DuplicateKey(good.Safetensors, a0)),
            "bad_module" => (good.ConfigBytes, Weights((n, t) => [SafetensorsWriter.Entry.F32(n.Replace("h.0.attn.c_attn", "h.0.attn.c_attnx"), t.Shape, t.Data)])),
            "wrong_base" => (good.ConfigBytes.Replace("[\"c_attn\",\"c_proj\",\"c_fc\"]", "[\"c_attn\", \"c_proj\", \"c_fc\", \"q_proj\"]"),
                Weights((n, t) => [SafetensorsWriter.Entry.F32(n.Replace("transformer.h.0.attn.c_attn", "model.layers.0.self_attn.q_proj"), t.Shape, t.Data)])),
            "layer_out_of_range" => (good.ConfigBytes, Weights((n, t) => [SafetensorsWriter.Entry.F32(n.Replace("h.1.", "h.7."), t.Shape, t.Data)])),
            "wrong_shape" => (good.ConfigBytes, Weights((n, t) => n == a0 ? [SafetensorsWriter.Entry.F32(n, [4, 60], new float[240])] : Keep(n, t))),
            "rank_mismatch_ab" => (good.ConfigBytes, Weights((n, t) => n == b0 ? [SafetensorsWriter.Entry.F32(n, [192, 3], new float[576])] : Keep(n, t))),
            "rank_mismatch_config" => (good.ConfigBytes.Replace("\"r\": 4", "\"r\": 8"), good.Safetensors),
            "nan" => (good.ConfigBytes, Weights((n, t) => n == b0 ? [SafetensorsWriter.Entry.F32(n, t.Shape, t.Data.Select((x, i) => i == 17 ? float.NaN : x).ToArray())] : Keep(n, t))),
            "int_dtype" => (good.ConfigBytes, Weights((n, t) => n == a0 ? [new SafetensorsWriter.Entry(n, SafetensorsDType.I32, t.Shape, new byte[t.Data.Length * 4])] : Keep(n, t))),
            "unpaired" => (good.ConfigBytes, Weights((n, t) => n == b0 ? [] : Keep(n, t))),
            "not_targeted" => (good.ConfigBytes.Replace("[\"c_attn\",\"c_proj\",\"c_fc\"]", "[\"c_attn\", \"c_proj\"]"), good.Safetensors),
            "vera_no_projection" => VeraWithoutProjection(),
            "bias" => (good.ConfigBytes.Replace("\"bias\": \"none\"", "\"bias\": \"all\""), good.Safetensors),
            "empty" => (good.ConfigBytes, SafetensorsWriter.ToBytes([])),
            "overlapping_offsets" => (good.ConfigBytes, RawSafetensors("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"""u8, 12)),
            "offset_out_of_range" => (good.ConfigBytes, RawSafetensors("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"""u8, 4)),
            "header_length_overflow" => (good.ConfigBytes, [0xF0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, (byte)'{', (byte)'}']),
            "header_not_utf8" => (good.ConfigBytes, RawSafetensors([(byte)'{', (byte)'"', 0xC0, 0xAF, (byte)'"', (byte)':', (byte)'{', (byte)'}', (byte)'}'], 0)),
            _ => throw new ArgumentException(name),
        };
    }

    /// <summary>A safetensors file written byte by byte: the 8-byte header length, <paramref name="header"/>, then <paramref name="dataBytes"/> zero bytes.</summary>
    private static byte[] RawSafetensors(ReadOnlySpan<byte> header, int dataBytes)
    {
        var file = new byte[8 + header.Length + dataBytes];
        BitConverter.TryWriteBytes(file.AsSpan(0, 8), (long)header.Length);
        header.CopyTo(file.AsSpan(8));
        return file;
    }

    private static (byte[], byte[]) VeraWithoutProjection()
    {
        var v = PeftFolders.Vera(PeftFolders.Gpt2);
        var entries = v.Tensors.Where(kv => !kv.Key.StartsWith("base_model.vera_", StringComparison.Ordinal))
            .Select(kv => SafetensorsWriter.Entry.F32(kv.Key, kv.Value.Shape, kv.Value.Data)).ToList();
        return (v.ConfigBytes.Replace("\"save_projection\": true", "\"save_projection\": false"), SafetensorsWriter.ToBytes(entries));
    }

    /// <summary>Rewrites the header so that a second key repeats <paramref name="name"/> (same length swap keeps offsets valid).</summary>
    private static byte[] DuplicateKey(byte[] file, string name)
    {
        string other = name.Replace("h.0.attn.c_attn", "h.1.attn.c_attn");
        long n = BitConverter.ToInt64(file, 0);
        string header = System.Text.Encoding.UTF8.GetString(file, 8, (int)n).Replace($"\"{other}\"", $"\"{name}\"");
        var bytes = System.Text.Encoding.UTF8.GetBytes(header);
        var result = (byte[])file.Clone();
        bytes.CopyTo(result, 8);
        return result;
    }

    [Theory]
    [MemberData(nameof(Malformed))]
    public void Read_Malformed_ThrowsSpecificCode(string name, string code)
    {
        var (config, weights) = MalformedCase(name);
        var e = Assert.Throws<AdapterValidationException>(() => PeftAdapterReader.Read(config, weights, PeftFolders.Gpt2));
        Assert.Equal(code, e.Code);
        Assert.False(string.IsNullOrWhiteSpace(e.Message));
    }

    [Fact]
    public void Read_NaN_NamesTensorAndIndex()
    {
        var (config, weights) = MalformedCase("nan");
        var e = Assert.Throws<AdapterValidationException>(() => PeftAdapterReader.Read(config, weights, PeftFolders.Gpt2));
        Assert.Equal("base_model.model.transformer.h.0.attn.c_attn.lora_B.weight", e.Tensor);
        Assert.Contains("flat index 17", e.Message);
    }

    [Fact]
    public void Parse_UnknownKeys_AreNotesNotErrors()
    {
        var folder = PeftFolders.Gpt2Lora(extraConfig: ", \"peft_version\": \"0.99\", \"shiny_new_option\": 3");
        var v = PeftAdapterReader.Read(folder.ConfigBytes, folder.Safetensors, PeftFolders.Gpt2);
        Assert.Contains(v.Notes, n => n.Contains("shiny_new_option"));
        Assert.DoesNotContain(v.Notes, n => n.Contains("peft_version"));
    }

    [Fact]
    public void Read_OldConfigWithoutNewerKeys_DefaultsToFalse()
    {
        var folder = PeftFolders.Gpt2Lora();
        string old = """{"peft_type": "LORA", "r": 4, "lora_alpha": 16, "target_modules": ["c_attn", "c_proj", "c_fc"], "fan_in_fan_out": false}""";
        var v = PeftAdapterReader.Read(System.Text.Encoding.UTF8.GetBytes(old), folder.Safetensors, PeftFolders.Gpt2);
        Assert.False(v.Config.UseRsLora);
        Assert.Contains(v.Notes, n => n.Contains("fan_in_fan_out"));
    }

    [Fact]
    public void Read_LayersToTransform_RefusesOtherLayers()
    {
        var folder = PeftFolders.Gpt2Lora();
        var config = folder.ConfigBytes.Replace("\"layers_to_transform\": null", "\"layers_to_transform\": [0]");
        var e = Assert.Throws<AdapterValidationException>(() => PeftAdapterReader.Read(config, folder.Safetensors, PeftFolders.Gpt2));
        Assert.Equal(AdapterErrors.NotTargeted, e.Code);
        Assert.Contains("layer 1", e.Message);
    }
}

internal static class ByteText
{
    public static byte[] Replace(this byte[] utf8, string from, string to)
    {
        string s = System.Text.Encoding.UTF8.GetString(utf8);
        if (!s.Contains(from)) throw new ArgumentException($"'{from}' not in text");
        return System.Text.Encoding.UTF8.GetBytes(s.Replace(from, to));
    }
}
