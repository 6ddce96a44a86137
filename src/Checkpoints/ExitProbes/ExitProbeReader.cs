using System.Text.Json;
using Serving.Checkpoints.RewardHeads;

namespace Serving.Checkpoints.ExitProbes;

/// <summary>
/// A trained early-exit probe (the format of <c>models/demo/exit-probe</c>): per probed layer l a small MLP on the hidden
/// state after layer l (raw, or through the final norm) whose output logit says how likely the top-1 token at l
/// already equals the full model's.
/// </summary>
public sealed record ExitProbeDefinition
{
    public string? BaseModel { get; init; }

    /// <summary>Whether the probes read the raw residual stream (false) or the final norm of it (true).</summary>
    public required bool FinalNorm { get; init; }

    public required RewardActivation Activation { get; init; }

    /// <summary>Per layer (1..L-1), the probe's dense layers; layers without a probe never exit.</summary>
    public required IReadOnlyDictionary<int, IReadOnlyList<DenseLayer>> Probes { get; init; }

    /// <summary>The threshold on sigmoid(logit) the file recommends (the calibration's choice), if any.</summary>
    public double? RecommendedThreshold { get; init; }
}

/// <summary>Reads and validates an exit probe against a base config; failures are <see cref="RewardHeadFormatException"/>s (same codes).</summary>
public static class ExitProbeReader
{
    public const string Kind = "exit-probe";

    public static ExitProbeDefinition ReadFolder(string folder, ModelConfig baseConfig)
    {
        var (config, tensors) = HeadFileParts.ReadFolder(folder);
        return Read(config, tensors, baseConfig);
    }

    public static ExitProbeDefinition Read(ReadOnlySpan<byte> configJson, byte[] safetensors, ModelConfig baseConfig)
    {
        var root = HeadFileParts.ParseConfigObject(configJson);
        if (Str(root, "kind") != Kind) throw Config($"config.json: \"kind\" must be \"{Kind}\"");
        if (root.TryGetProperty("num_hidden_layers", out var n) && n.GetInt32() != baseConfig.NumLayers)
        {
            throw new RewardHeadFormatException(RewardHeadFormatException.BaseMismatch, $"the probe was trained on a model of {n.GetInt32()} layers; this one has {baseConfig.NumLayers}");
        }
        var finalNorm = Str(root, "input") switch
        {
            null or "raw" or "hidden" => false,
            "final_norm" => true,
            var other => throw Config($"config.json: \"input\" must be \"raw\" or \"final_norm\", got \"{other}\""),
        };
        var activation = Str(root, "activation") switch
        {
            null or "identity" => RewardActivation.Identity,
            "tanh" => RewardActivation.Tanh,
            "relu" => RewardActivation.Relu,
            "gelu" => RewardActivation.Gelu,
            "silu" => RewardActivation.Silu,
            "sigmoid" => RewardActivation.Sigmoid,
            var other => throw Config($"config.json: activation '{other}' is not supported"),
        };
        if (!root.TryGetProperty("probes", out var probes) || probes.ValueKind != JsonValueKind.Array) throw Config("config.json: \"probes\" must be a list");
        SafetensorsFile file;
        try
        {
            file = SafetensorsFile.Parse(safetensors, "probe.safetensors");
        }
        catch (SafetensorsFormatException e)
        {
            throw new RewardHeadFormatException(RewardHeadFormatException.InvalidTensors, e.Message);
        }
        using (file)
        {
            var result = new Dictionary<int, IReadOnlyList<DenseLayer>>();
            foreach (var probe in probes.EnumerateArray())
            {
                var layer = probe.GetProperty("layer").GetInt32();
                if (layer < 1 || layer >= baseConfig.NumLayers)
                {
                    throw new RewardHeadFormatException(RewardHeadFormatException.BaseMismatch, $"a probe after layer {layer}: exits are after layers 1..{baseConfig.NumLayers - 1}");
                }
                var dense = new List<DenseLayer>();
                var width = baseConfig.HiddenSize;
                foreach (var l in probe.GetProperty("layers").EnumerateArray())
                {
                    var wName = Str(l, "weight") ?? throw Config($"probe {layer}: a layer lacks \"weight\"");
                    if (!file.Tensors.TryGetValue(wName, out var info) || info.Shape.Length != 2 || info.Shape[1] != width)
                    {
                        throw new RewardHeadFormatException(RewardHeadFormatException.InvalidTensors, $"probe {layer}: tensor '{wName}' must exist with shape [out, {width}]");
                    }
                    var rows = (int)info.Shape[0];
                    var w = file.ReadFloat32(wName);
                    var b = Str(l, "bias") is { } bName ? file.ReadFloat32(bName, [rows]) : null;
                    if (w.Any(x => !float.IsFinite(x)) || (b?.Any(x => !float.IsFinite(x)) ?? false))
                    {
                        throw new RewardHeadFormatException(RewardHeadFormatException.InvalidTensors, $"probe {layer}: non-finite values");
                    }
                    dense.Add(new DenseLayer(width, rows, w, b));
                    width = rows;
                }
                if (width != 1) throw new RewardHeadFormatException(RewardHeadFormatException.InvalidTensors, $"probe {layer} must output one logit, it outputs {width}");
                result[layer] = dense;
            }
            return new ExitProbeDefinition
            {
                BaseModel = Str(root, "base_model"),
                FinalNorm = finalNorm,
                Activation = activation,
                Probes = result,
                RecommendedThreshold = root.TryGetProperty("recommended_threshold", out var t) && t.ValueKind == JsonValueKind.Number ? t.GetDouble() : null,
            };
        }
    }

    private static string? Str(JsonElement e, string key) => e.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static RewardHeadFormatException Config(string m) => new(RewardHeadFormatException.InvalidConfig, m);
}
