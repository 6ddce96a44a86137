using System.Text.Json;

namespace Serving.Checkpoints.RewardHeads;

/// <summary>
/// Reads and validates a reward head (<c>config.json</c> + <c>head.safetensors</c>) against a base model's config:
/// every field checked, every tensor's presence, dtype, shape and finiteness checked, the MLP's widths chained from the
/// base's hidden size to one output, the layer in range. Each failure is a <see cref="RewardHeadFormatException"/>
/// whose code says which side is at fault (the files, or their fit to the base).
/// </summary>
public static class RewardHeadReader
{
    /// <summary>Largest head accepted (weights, fp32): a head is meant to be far smaller than a layer.</summary>
    public const long MaxParameters = 16L << 20;

    /// <summary>Reads <c>config.json</c> and <c>head.safetensors</c> from a folder.</summary>
    public static RewardHeadDefinition ReadFolder(string folder, ModelConfig baseConfig)
    {
        var config = Path.Combine(folder, "config.json");
        var tensors = Path.Combine(folder, "head.safetensors");
        if (!LinkedFiles.Exists(config)) throw new RewardHeadFormatException(RewardHeadFormatException.InvalidConfig, $"{folder} has no config.json");
        if (!LinkedFiles.Exists(tensors)) throw new RewardHeadFormatException(RewardHeadFormatException.InvalidTensors, $"{folder} has no head.safetensors");
        return Read(LinkedFiles.ReadAllBytes(config), LinkedFiles.ReadAllBytes(tensors), baseConfig);
    }

    /// <summary>Validates uploaded bytes.</summary>
    public static RewardHeadDefinition Read(ReadOnlySpan<byte> configJson, byte[] safetensors, ModelConfig baseConfig)
    {
        ArgumentNullException.ThrowIfNull(baseConfig);
        var root = HeadFileParts.ParseConfigObject(configJson);
        var kind = OptionalString(root, "kind");
        if (kind != "reward-head") throw Config($"config.json: \"kind\" must be \"reward-head\", got {(kind is null ? "nothing" : $"\"{kind}\"")}");
        var layer = RequiredInt(root, "layer");
        var input = OptionalString(root, "input") switch
        {
            null or "final_norm" => RewardHeadInput.FinalNorm,
            "hidden" => RewardHeadInput.Hidden,
            var other => throw Config($"config.json: \"input\" must be \"final_norm\" or \"hidden\", got \"{other}\""),
        };
        var pooling = OptionalString(root, "pooling") switch
        {
            "sum" => RewardPooling.Sum,
            null or "last" => RewardPooling.Last,
            "mean" => RewardPooling.Mean,
            var other => throw Config($"config.json: \"pooling\" must be \"sum\", \"last\" or \"mean\", got \"{other}\""),
        };
        var activation = OptionalString(root, "activation") switch
        {
            null or "identity" or "linear" => RewardActivation.Identity,
            "tanh" => RewardActivation.Tanh,
            "relu" => RewardActivation.Relu,
            "gelu" => RewardActivation.Gelu,
            "silu" or "swish" => RewardActivation.Silu,
            "sigmoid" => RewardActivation.Sigmoid,
            var other => throw Config($"config.json: \"activation\" \"{other}\" is not one of identity, tanh, relu, gelu, silu, sigmoid"),
        };
        if (!root.TryGetProperty("layers", out var layersJson) || layersJson.ValueKind != JsonValueKind.Array || layersJson.GetArrayLength() == 0)
        {
            throw Config("config.json: \"layers\" must be a non-empty list of {\"weight\", \"bias\"} tensor names");
        }

        if (layer < 0 || layer > baseConfig.NumLayers)
        {
            throw new RewardHeadFormatException(RewardHeadFormatException.BaseMismatch,
                $"the head reads layer {layer}, but the base model has layers 0 (embedding output) to {baseConfig.NumLayers}");
        }

        SafetensorsFile file;
        try
        {
            file = SafetensorsFile.Parse(safetensors, "head.safetensors");
        }
        catch (SafetensorsFormatException e)
        {
            throw Tensors(e.Message, RewardHeadFormatException.SafetensorsInvalid);
        }
        using (file)
        {
            var layers = new List<DenseLayer>();
            var width = baseConfig.HiddenSize;
            long parameters = 0;
            var i = 0;
            foreach (var entry in layersJson.EnumerateArray())
            {
                if (entry.ValueKind != JsonValueKind.Object) throw Config($"config.json: layers[{i}] must be an object");
                var weightName = OptionalString(entry, "weight") ?? throw Config($"config.json: layers[{i}].weight (a tensor name) is required");
                var biasName = OptionalString(entry, "bias");
                var weight = ReadTensor(file, weightName, i, "weight", out var shape);
                if (shape.Count != 2) throw Tensors($"tensor '{weightName}' (layers[{i}].weight) must be 2-D [out, in], got [{string.Join(", ", shape)}]", RewardHeadFormatException.TensorShape);
                var (rows, cols) = ((int)shape[0], (int)shape[1]);
                if (cols != width)
                {
                    var reason = i == 0
                        ? $"the first layer reads {cols} values, but the base model's hidden size is {width}"
                        : $"layers[{i}] reads {cols} values, but layers[{i - 1}] writes {width}";
                    throw new RewardHeadFormatException(i == 0 ? RewardHeadFormatException.BaseMismatch : RewardHeadFormatException.InvalidTensors, reason);
                }
                float[]? bias = null;
                if (biasName is not null)
                {
                    bias = ReadTensor(file, biasName, i, "bias", out var biasShape);
                    if (biasShape.Count != 1 || biasShape[0] != rows) throw Tensors($"tensor '{biasName}' (layers[{i}].bias) must have shape [{rows}], got [{string.Join(", ", biasShape)}]", RewardHeadFormatException.TensorShape);
                }
                parameters += weight.Length + (bias?.Length ?? 0);
                if (parameters > MaxParameters) throw Tensors($"the head has more than {MaxParameters} parameters; a reward head must be small next to the base", RewardHeadFormatException.TooLarge);
                layers.Add(new DenseLayer(cols, rows, weight, bias));
                width = rows;
                i++;
            }
            if (width != 1) throw Tensors($"the last layer must output one value (the reward logit), it outputs {width}", RewardHeadFormatException.TensorShape);
            var baseModel = OptionalString(root, "base_model");
            return new RewardHeadDefinition
            {
                BaseModel = baseModel,
                Layer = layer,
                Input = input,
                Pooling = pooling,
                Activation = activation,
                Layers = layers,
                Label = OptionalString(root, "label"),
            };
        }
    }

    private static float[] ReadTensor(SafetensorsFile file, string name, int layer, string role, out IReadOnlyList<long> shape) =>
        HeadFileParts.ReadFinite(file, name, $" (layers[{layer}].{role})", out shape);

    private static int RequiredInt(JsonElement root, string key)
    {
        if (!root.TryGetProperty(key, out var v) || v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out var n))
        {
            throw Config($"config.json: \"{key}\" must be an integer");
        }
        return n;
    }

    private static string? OptionalString(JsonElement root, string key)
    {
        if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.String) throw Config($"config.json: \"{key}\" must be a string");
        return v.GetString();
    }

    private static RewardHeadFormatException Config(string message) => new(RewardHeadFormatException.InvalidConfig, message);

    private static RewardHeadFormatException Tensors(string message, string reason) => new(RewardHeadFormatException.InvalidTensors, message, reason);
}
