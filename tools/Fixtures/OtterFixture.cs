using System.Text.Json;
using Serving.Checkpoints;

namespace Serving.Fixtures;

/// <summary>
/// A random Otter side network (the forge's <c>models/demo/otter</c> format: per layer side attention + SwiGLU reading
/// the base's normed layer inputs, a side stream of <c>side</c> values, a two-layer tanh head) for a Llama- or GPT-2-style model.
/// For tests of the format and for cost benchmarks at shapes the forge does not train.
/// </summary>
public static class OtterFixture
{
    /// <summary>
    /// Writes <c>config.json</c> + <c>otter.safetensors</c> into <paramref name="dir"/> and returns it; the side layers
    /// read the base layers <paramref name="sideLayers"/> (null: every base layer).
    /// </summary>
    public static string Write(string dir, ModelConfig c, int seed, int side = 16, int heads = 2, int ffn = 12, string pooling = "sum", IReadOnlyList<int>? sideLayers = null)
    {
        Directory.CreateDirectory(dir);
        var rng = new Random(seed);
        float[] Rand(long n, double scale) => Enumerable.Range(0, (int)n).Select(_ => (float)((rng.NextDouble() * 2 - 1) * scale)).ToArray();
        int d = c.HiddenSize, hd = c.HeadDim, q = heads * hd;
        var entries = new List<SafetensorsWriter.Entry>();
        var layers = new List<object>();
        foreach (var l in sideLayers ?? Enumerable.Range(0, c.NumLayers).ToArray())
        {
            object P(string name, int rows, int cols, double scale)
            {
                entries.Add(SafetensorsWriter.Entry.F32($"layers.{l}.{name}.weight", [rows, cols], Rand(rows * cols, scale)));
                return new { weight = $"layers.{l}.{name}.weight", shape = new[] { rows, cols } };
            }
            layers.Add(new Dictionary<string, object>
            {
                ["layer"] = l,
                ["input_norm"] = $"model.layers.{l}.input_layernorm.weight",
                ["q_proj"] = P("q_proj", q, d, 0.3),
                ["k_proj"] = P("k_proj", q, d, 0.3),
                ["v_proj"] = P("v_proj", q, d, 0.3),
                ["o_proj"] = P("o_proj", side, q, 0.3),
                ["gate_proj"] = P("gate_proj", ffn, d, 0.3),
                ["up_proj"] = P("up_proj", ffn, d, 0.3),
                ["down_proj"] = P("down_proj", side, ffn, 0.3),
            });
        }
        entries.Add(SafetensorsWriter.Entry.F32("norm.weight", [side], Rand(side, 0.5).Select(x => 1 + x).ToArray()));
        entries.Add(SafetensorsWriter.Entry.F32("head.layers.0.weight", [8, side], Rand(8 * side, 0.4)));
        entries.Add(SafetensorsWriter.Entry.F32("head.layers.0.bias", [8], Rand(8, 0.1)));
        entries.Add(SafetensorsWriter.Entry.F32("head.layers.1.weight", [1, 8], Rand(8, 0.5)));
        entries.Add(SafetensorsWriter.Entry.F32("head.layers.1.bias", [1], Rand(1, 0.1)));
        SafetensorsWriter.Write(Path.Combine(dir, "otter.safetensors"), entries);
        File.WriteAllText(Path.Combine(dir, "config.json"), JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["kind"] = "otter-side-network",
            ["num_hidden_layers"] = c.NumLayers,
            ["hidden_size"] = d,
            ["side_size"] = side,
            ["num_heads"] = heads,
            ["num_key_value_heads"] = heads,
            ["head_dim"] = hd,
            ["intermediate_size"] = ffn,
            ["rms_norm_eps"] = c.NormEps,
            ["rope"] = new { theta = c.RopeTheta },
            ["layers"] = layers,
            ["head"] = new
            {
                norm = new { weight = "norm.weight", shape = new[] { side } },
                layers = new object[]
                {
                    new { weight = "head.layers.0.weight", bias = "head.layers.0.bias", shape = new[] { 8, side } },
                    new { weight = "head.layers.1.weight", bias = "head.layers.1.bias", shape = new[] { 1, 8 } },
                },
                activation = "tanh",
            },
            ["pooling"] = pooling,
        }));
        return dir;
    }
}
