using System.Text.Json;

namespace Serving.Checkpoints.RewardHeads;

/// <summary>
/// What the readers of small files beside a model share (reward heads, Otter side networks, exit probes): the
/// <c>config.json</c> object, the folder's files, and finite float32 tensors, each failure a
/// <see cref="RewardHeadFormatException"/> with its reason (never a JSON or safetensors exception).
/// </summary>
internal static class HeadFileParts
{
    /// <summary>The root object of <paramref name="configJson"/> (cloned: it outlives the document).</summary>
    public static JsonElement ParseConfigObject(ReadOnlySpan<byte> configJson)
    {
        JsonElement root;
        try
        {
            using var doc = JsonDocument.Parse(configJson.ToArray());
            root = doc.RootElement.Clone();
        }
        catch (JsonException e)
        {
            throw new RewardHeadFormatException(RewardHeadFormatException.InvalidConfig, $"config.json is not valid JSON: {e.Message}");
        }
        if (root.ValueKind != JsonValueKind.Object) throw new RewardHeadFormatException(RewardHeadFormatException.InvalidConfig, "config.json must be a JSON object");
        return root;
    }

    /// <summary>The bytes of <paramref name="folder"/>'s <c>config.json</c> and of its first <c>*.safetensors</c> (by name).</summary>
    public static (byte[] Config, byte[] Tensors) ReadFolder(string folder)
    {
        var config = Path.Combine(folder, "config.json");
        if (!LinkedFiles.Exists(config)) throw new RewardHeadFormatException(RewardHeadFormatException.InvalidConfig, $"{folder} has no config.json");
        var tensors = Directory.GetFiles(folder, "*.safetensors").Order().FirstOrDefault()
            ?? throw new RewardHeadFormatException(RewardHeadFormatException.InvalidTensors, $"{folder} has no .safetensors file", RewardHeadFormatException.TensorMissing);
        return (LinkedFiles.ReadAllBytes(config), LinkedFiles.ReadAllBytes(tensors));
    }

    /// <summary>
    /// Tensor <paramref name="name"/> as float32 values, every one finite; <paramref name="where"/> names its role in the
    /// messages (e.g. <c>" (layers[0].weight)"</c>, or empty).
    /// </summary>
    public static float[] ReadFinite(SafetensorsFile file, string name, string where, out IReadOnlyList<long> shape)
    {
        if (!file.Tensors.TryGetValue(name, out var info)) throw Tensors($"the safetensors file has no tensor '{name}'{where}", RewardHeadFormatException.TensorMissing);
        shape = info.Shape;
        float[] values;
        try
        {
            values = file.ReadFloat32(name);
        }
        catch (SafetensorsFormatException e)
        {
            throw Tensors(e.Message, RewardHeadFormatException.SafetensorsInvalid);
        }
        foreach (var v in values)
        {
            if (!float.IsFinite(v)) throw Tensors($"tensor '{name}'{where} holds a non-finite value ({v})", RewardHeadFormatException.TensorNotFinite);
        }
        return values;
    }

    private static RewardHeadFormatException Tensors(string message, string reason) => new(RewardHeadFormatException.InvalidTensors, message, reason);
}
