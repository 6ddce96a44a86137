using System.Text.Json;

namespace Serving.Checkpoints.RewardHeads;

/// <summary>
/// Reads and validates an Otter side network (<c>config.json</c> with <c>kind: otter-side-network</c> + its safetensors)
/// against a base model's config: the layer count, the base layers the side layers read (each in range, strictly
/// increasing), the hidden size, the base's head dimension and rotary θ, every tensor present, finite and of the shape
/// the dimensions imply. Failures are <see cref="RewardHeadFormatException"/>s
/// with the same codes as a head-only reward head's.
/// </summary>
public static class OtterReader
{
    /// <summary>The kind string of the format.</summary>
    public const string Kind = "otter-side-network";

    /// <summary>Whether <paramref name="configJson"/> declares an Otter side network (else a head-only reward head is expected).</summary>
    public static bool IsOtter(ReadOnlySpan<byte> configJson)
    {
        try
        {
            using var doc = JsonDocument.Parse(configJson.ToArray());
            return doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("kind", out var k) && k.ValueKind == JsonValueKind.String && k.GetString() == Kind;
        }
        catch (JsonException)
        {
            return false;
        }
    }

    /// <summary>Reads <c>config.json</c> and the first <c>*.safetensors</c> of a folder.</summary>
    public static OtterDefinition ReadFolder(string folder, ModelConfig baseConfig)
    {
        var (config, tensors) = HeadFileParts.ReadFolder(folder);
        return Read(config, tensors, baseConfig);
    }

    public static OtterDefinition Read(ReadOnlySpan<byte> configJson, byte[] safetensors, ModelConfig baseConfig)
    {
        var root = HeadFileParts.ParseConfigObject(configJson);
        if (Str(root, "kind") != Kind) throw Config($"config.json: \"kind\" must be \"{Kind}\"");
        var layers = Int(root, "num_hidden_layers");
        var hidden = Int(root, "hidden_size");
        var side = Int(root, "side_size");
        var heads = Int(root, "num_heads");
        var kvHeads = root.TryGetProperty("num_key_value_heads", out _) ? Int(root, "num_key_value_heads") : heads;
        var headDim = Int(root, "head_dim");
        var ffn = Int(root, "intermediate_size");
        var eps = root.TryGetProperty("rms_norm_eps", out var e1) && e1.ValueKind == JsonValueKind.Number ? e1.GetSingle() : baseConfig.NormEps;
        if (side < 1 || heads < 1 || headDim < 2 || headDim % 2 != 0 || ffn < 1) throw Config("config.json: side_size, num_heads, intermediate_size must be positive and head_dim even");
        if (kvHeads != heads) throw Config("config.json: the side network's attention has one K/V head per query head (num_key_value_heads must equal num_heads)");
        if (layers != baseConfig.NumLayers) throw Mismatch($"the side network has {layers} layers, the base model {baseConfig.NumLayers}");
        if (hidden != baseConfig.HiddenSize) throw Mismatch($"the side network reads {hidden} values per position, the base model's hidden size is {baseConfig.HiddenSize}");
        if (baseConfig.Architecture == ModelArchitecture.Llama && headDim != baseConfig.HeadDim)
        {
            throw Mismatch($"the side heads use head_dim {headDim}, but they share the base's RoPE tables of head_dim {baseConfig.HeadDim}");
        }
        if (root.TryGetProperty("rope", out var rope) && rope.ValueKind == JsonValueKind.Object && rope.TryGetProperty("theta", out var theta) && theta.ValueKind == JsonValueKind.Number
            && Math.Abs(theta.GetSingle() - baseConfig.RopeTheta) > 1e-3 * baseConfig.RopeTheta)
        {
            throw Mismatch($"the side network's rope θ {theta.GetSingle()} differs from the base's {baseConfig.RopeTheta}");
        }
        if (!root.TryGetProperty("layers", out var layersJson) || layersJson.ValueKind != JsonValueKind.Array || layersJson.GetArrayLength() is 0 || layersJson.GetArrayLength() > layers)
        {
            throw Config($"config.json: \"layers\" must list between 1 and {layers} side layers (at most one per base layer)");
        }
        if (!root.TryGetProperty("head", out var head) || head.ValueKind != JsonValueKind.Object) throw Config("config.json: \"head\" (norm, layers, activation) is required");

        SafetensorsFile file;
        try
        {
            file = SafetensorsFile.Parse(safetensors, "otter.safetensors");
        }
        catch (SafetensorsFormatException ex)
        {
            throw Tensors(ex.Message, RewardHeadFormatException.SafetensorsInvalid);
        }
        using (file)
        {
            var q = heads * headDim;
            var list = new List<OtterLayer>();
            var i = 0;
            foreach (var l in layersJson.EnumerateArray())
            {
                float[] T(string part, long rows, long cols)
                {
                    if (l.ValueKind != JsonValueKind.Object || !l.TryGetProperty(part, out var p) || p.ValueKind != JsonValueKind.Object) throw Config($"config.json: layers[{i}].{part} is required");
                    return Read(file, Str(p, "weight") ?? throw Config($"config.json: layers[{i}].{part}.weight is required"), [rows, cols]);
                }
                var baseLayer = BaseLayer(l, i, layersJson.GetArrayLength() == layers);
                if (baseLayer >= layers) throw Mismatch($"layers[{i}] reads base layer {baseLayer}; the base model has layers 0..{layers - 1}");
                if (list.Count > 0 && baseLayer <= list[^1].Layer)
                {
                    throw Config($"config.json: layers[{i}].layer {baseLayer} must be greater than layers[{i - 1}].layer {list[^1].Layer} (side layers in base-layer order, at most one per base layer)");
                }
                list.Add(new OtterLayer
                {
                    Layer = baseLayer,
                    InputNorm = Str(l, "input_norm") ?? throw Config($"config.json: layers[{i}].input_norm (the base norm tensor) is required"),
                    Q = T("q_proj", q, hidden),
                    K = T("k_proj", q, hidden),
                    V = T("v_proj", q, hidden),
                    O = T("o_proj", side, q),
                    Gate = T("gate_proj", ffn, hidden),
                    Up = T("up_proj", ffn, hidden),
                    Down = T("down_proj", side, ffn),
                });
                i++;
            }
            if (!head.TryGetProperty("norm", out var norm) || Str(norm, "weight") is not { } normName) throw Config("config.json: head.norm.weight is required");
            var headNorm = Read(file, normName, [side]);
            if (!head.TryGetProperty("layers", out var headLayers) || headLayers.ValueKind != JsonValueKind.Array || headLayers.GetArrayLength() == 0)
            {
                throw Config("config.json: head.layers must be a non-empty list");
            }
            var dense = new List<DenseLayer>();
            var width = side;
            foreach (var h in headLayers.EnumerateArray())
            {
                var wName = Str(h, "weight") ?? throw Config("config.json: head.layers[].weight is required");
                if (!file.Tensors.TryGetValue(wName, out var info)) throw Tensors($"the safetensors file has no tensor '{wName}'", RewardHeadFormatException.TensorMissing);
                if (info.Shape.Length != 2) throw Tensors($"tensor '{wName}' must be 2-D [out, in], got {info.ShapeText}", RewardHeadFormatException.TensorShape);
                var rows = (int)info.Shape[0];
                if (info.Shape[1] != width) throw Tensors($"tensor '{wName}' reads {info.Shape[1]} values, the previous layer writes {width}", RewardHeadFormatException.TensorShape);
                var w = Read(file, wName, [rows, width]);
                var b = Str(h, "bias") is { } bName ? Read(file, bName, [rows]) : null;
                dense.Add(new DenseLayer(width, rows, w, b));
                width = rows;
            }
            if (width != 1) throw Tensors($"the head's last layer must output one value, it outputs {width}", RewardHeadFormatException.TensorShape);
            return new OtterDefinition
            {
                BaseModel = Str(root, "base_model"),
                Label = Str(root, "label"),
                SideSize = side,
                NumHeads = heads,
                HeadDim = headDim,
                IntermediateSize = ffn,
                NormEps = eps,
                Layers = list,
                HeadNorm = headNorm,
                HeadLayers = dense,
                Activation = Str(head, "activation") switch
                {
                    null or "identity" => RewardActivation.Identity,
                    "tanh" => RewardActivation.Tanh,
                    "relu" => RewardActivation.Relu,
                    "gelu" => RewardActivation.Gelu,
                    "silu" => RewardActivation.Silu,
                    "sigmoid" => RewardActivation.Sigmoid,
                    var other => throw Config($"config.json: head.activation '{other}' is not one of identity, tanh, relu, gelu, silu, sigmoid"),
                },
                Pooling = Str(root, "pooling") switch
                {
                    "sum" => RewardPooling.Sum,
                    null or "last" => RewardPooling.Last,
                    "mean" => RewardPooling.Mean,
                    var other => throw Config($"config.json: \"pooling\" must be sum, last or mean, got '{other}'"),
                },
            };
        }
    }

    /// <summary>
    /// The base layer side layer <paramref name="index"/> reads: its <c>"layer"</c>, which may be left out only when
    /// every base layer has a side layer (then entry i reads layer i).
    /// </summary>
    private static int BaseLayer(JsonElement layer, int index, bool everyLayer)
    {
        if (layer.ValueKind != JsonValueKind.Object) throw Config($"config.json: layers[{index}] must be an object");
        if (!layer.TryGetProperty("layer", out var v))
        {
            return everyLayer ? index : throw Config($"config.json: layers[{index}].layer (the base layer it reads) is required when the side network covers only some base layers");
        }
        return v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out var n) && n >= 0
            ? n
            : throw Config($"config.json: layers[{index}].layer must be a non-negative integer (a base layer index)");
    }

    private static float[] Read(SafetensorsFile file, string name, long[] shape)
    {
        var values = HeadFileParts.ReadFinite(file, name, "", out var actual);
        if (!actual.SequenceEqual(shape)) throw Tensors($"tensor '{name}' has shape [{string.Join(", ", actual)}], expected [{string.Join(", ", shape)}]", RewardHeadFormatException.TensorShape);
        return values;
    }

    private static int Int(JsonElement root, string key) =>
        root.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out var n) ? n : throw Config($"config.json: \"{key}\" must be an integer");

    private static string? Str(JsonElement root, string key) =>
        root.ValueKind == JsonValueKind.Object && root.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static RewardHeadFormatException Config(string m) => new(RewardHeadFormatException.InvalidConfig, m);
    private static RewardHeadFormatException Tensors(string m, string reason) => new(RewardHeadFormatException.InvalidTensors, m, reason);
    private static RewardHeadFormatException Mismatch(string m) => new(RewardHeadFormatException.BaseMismatch, m);
}
