using System.Text.Json;
using System.Text.Json.Nodes;
using Serving.AdapterStore.RewardHeads;
using Serving.Checkpoints;

namespace Serving.AdapterStore.Tests.RewardHeads;

/// <summary>
/// Reward head files in the format of <c>models/demo/reward-head</c> (a two-layer tanh MLP), random but seeded, and
/// the broken variants the upload must refuse. Linked into the gateway, node and one-process tests.
/// </summary>
public static class HeadFiles
{
    /// <summary>config.json + head.safetensors for a base of hidden size <paramref name="width"/>.</summary>
    /// <param name="width">What the first layer reads (the base's hidden size, unless testing a mismatch).</param>
    /// <param name="layer">Hidden state read.</param>
    /// <param name="seed">Weights' seed.</param>
    /// <param name="baseModel">config.json's <c>base_model</c> (null: absent).</param>
    /// <param name="biasShift">Added to the output bias (a "new version" with other rewards).</param>
    /// <param name="poison">A value written into the first weight (NaN: a non-finite tensor).</param>
    public static RewardHeadFiles Random(int width, int layer = 0, int seed = 1, string? baseModel = null, float biasShift = 0, float? poison = null,
        Action<JsonObject>? editConfig = null, bool dropBias = false)
    {
        var rng = new Random(seed);
        float[] Rand(int n, double scale) => Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() * 2 - 1) * scale)).ToArray();
        const int hidden = 8;
        var w0 = Rand(hidden * width, 0.5);
        if (poison is { } p) w0[0] = p;
        var entries = new List<SafetensorsWriter.Entry>
        {
            SafetensorsWriter.Entry.F32("layers.0.weight", [hidden, width], w0),
            SafetensorsWriter.Entry.F32("layers.0.bias", [hidden], Rand(hidden, 0.1)),
            SafetensorsWriter.Entry.F32("layers.1.weight", [1, hidden], Rand(hidden, 0.5)),
        };
        if (!dropBias) entries.Add(SafetensorsWriter.Entry.F32("layers.1.bias", [1], [0.05f + biasShift]));
        var config = new JsonObject
        {
            ["kind"] = "reward-head",
            ["label"] = "test head",
            ["layer"] = layer,
            ["input"] = "final_norm",
            ["pooling"] = "sum",
            ["activation"] = "tanh",
            ["layers"] = new JsonArray(
                new JsonObject { ["weight"] = "layers.0.weight", ["bias"] = "layers.0.bias" },
                new JsonObject { ["weight"] = "layers.1.weight", ["bias"] = "layers.1.bias" }),
        };
        if (baseModel is not null) config["base_model"] = baseModel;
        editConfig?.Invoke(config);
        return new RewardHeadFiles(JsonSerializer.SerializeToUtf8Bytes(config), SafetensorsWriter.ToBytes(entries), RewardHeadFiles.HeadTensorsName);
    }

    /// <summary>The files of a head folder (the demo's <c>models/demo/reward-head</c>).</summary>
    public static RewardHeadFiles Folder(string folder) => RewardHeadFiles.ReadFolder(folder);

    /// <summary>A multipart body with the two files (either may be left out), and optional form fields.</summary>
    public static MultipartFormDataContent Form(RewardHeadFiles files, bool config = true, bool tensors = true, params (string Name, string Value)[] fields)
    {
        var form = new MultipartFormDataContent();
        if (config) form.Add(new ByteArrayContent(files.ConfigJson), "config.json", RewardHeadFiles.ConfigName);
        if (tensors) form.Add(new ByteArrayContent(files.Tensors), files.TensorsName, files.TensorsName);
        foreach (var (name, value) in fields) form.Add(new StringContent(value), name);
        return form;
    }
}
