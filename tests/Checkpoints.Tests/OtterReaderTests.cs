using System.Text;
using System.Text.Json;
using Serving.Checkpoints.RewardHeads;
using Xunit;

namespace Serving.Checkpoints.Tests;

/// <summary>
/// The Otter format's side layers: on every base layer (entry i reads layer i, "layer" optional) or on a subset
/// (each entry names its base layer, strictly increasing, in range); each broken rule a specific code and message.
/// </summary>
public sealed class OtterReaderTests
{
    // 3 layers, d 8, 2 heads of 4: the side heads' head_dim must be 4 (the base's RoPE tables).
    private static readonly ModelConfig Base = ModelConfig.Parse("""{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":8,"num_hidden_layers":3,"num_attention_heads":2,"num_key_value_heads":1,"intermediate_size":16,"vocab_size":32,"max_position_embeddings":64,"rms_norm_eps":1e-5,"tie_word_embeddings":true}""");

    private const int Side = 6, HeadDim = 4, Ffn = 5, D = 8;

    /// <summary>A side network with one entry per element of <paramref name="layers"/> (null: the entry has no "layer" key); tensors named by entry, filled with 0.1.</summary>
    private static (byte[] Config, byte[] Tensors) Files(int?[] layers)
    {
        var entries = new List<SafetensorsWriter.Entry>();
        var json = new List<Dictionary<string, object>>();
        for (var i = 0; i < layers.Length; i++)
        {
            var entry = new Dictionary<string, object> { ["input_norm"] = $"model.layers.{layers[i] ?? i}.input_layernorm.weight" };
            if (layers[i] is { } l) entry["layer"] = l;
            foreach (var (name, rows, cols) in new[] { ("q_proj", HeadDim, D), ("k_proj", HeadDim, D), ("v_proj", HeadDim, D), ("o_proj", Side, HeadDim), ("gate_proj", Ffn, D), ("up_proj", Ffn, D), ("down_proj", Side, Ffn) })
            {
                entries.Add(SafetensorsWriter.Entry.F32($"s{i}.{name}", [rows, cols], Enumerable.Repeat(0.1f, rows * cols).ToArray()));
                entry[name] = new { weight = $"s{i}.{name}" };
            }
            json.Add(entry);
        }
        entries.Add(SafetensorsWriter.Entry.F32("norm.weight", [Side], Enumerable.Repeat(1f, Side).ToArray()));
        entries.Add(SafetensorsWriter.Entry.F32("head.w", [1, Side], Enumerable.Repeat(0.1f, Side).ToArray()));
        var config = new Dictionary<string, object>
        {
            ["kind"] = OtterReader.Kind, ["num_hidden_layers"] = 3, ["hidden_size"] = D, ["side_size"] = Side, ["num_heads"] = 1,
            ["head_dim"] = HeadDim, ["intermediate_size"] = Ffn, ["layers"] = json, ["pooling"] = "sum",
            ["head"] = new { norm = new { weight = "norm.weight" }, layers = new[] { new { weight = "head.w" } } },
        };
        return (JsonSerializer.SerializeToUtf8Bytes(config), SafetensorsWriter.ToBytes(entries));
    }

    private static OtterDefinition Read(int?[] layers)
    {
        var (config, tensors) = Files(layers);
        return OtterReader.Read(config, tensors, Base);
    }

    private static RewardHeadFormatException Fails(int?[] layers) => Assert.Throws<RewardHeadFormatException>(() => Read(layers));

    [Fact]
    public void Read_EveryLayerWithoutLayerKeys_EntryIReadsLayerI()
    {
        var def = Read([null, null, null]);
        Assert.Equal([0, 1, 2], def.Layers.Select(l => l.Layer));
        Assert.Equal(3 * (3 * HeadDim * D + Side * HeadDim + 2 * Ffn * D + Side * Ffn) + Side + Side, def.Parameters);
    }

    [Fact]
    public void Read_SubsetOfLayers_KeepsEachEntrysBaseLayer()
    {
        var def = Read([0, 2]);
        Assert.Equal([0, 2], def.Layers.Select(l => l.Layer));
        Assert.Equal("model.layers.2.input_layernorm.weight", def.Layers[1].InputNorm);
        Assert.Equal([1], Read([1]).Layers.Select(l => l.Layer));
    }

    [Fact]
    public void Read_SubsetWithoutLayerKey_InvalidConfigNamingTheEntry()
    {
        var e = Fails([0, null]);
        Assert.Equal(RewardHeadFormatException.InvalidConfig, e.Code);
        Assert.Contains("layers[1].layer (the base layer it reads) is required", e.Message);
    }

    [Theory]
    [InlineData(new[] { 1, 1 }, "layers[1].layer 1 must be greater than layers[0].layer 1")]
    [InlineData(new[] { 2, 0 }, "layers[1].layer 0 must be greater than layers[0].layer 2")]
    [InlineData(new[] { 0, -1 }, "layers[1].layer must be a non-negative integer")]
    public void Read_LayersOutOfOrderOrRepeated_InvalidConfig(int[] layers, string messagePart)
    {
        var e = Fails(layers.Select(l => (int?)l).ToArray());
        Assert.Equal(RewardHeadFormatException.InvalidConfig, e.Code);
        Assert.Contains(messagePart, e.Message);
    }

    [Fact]
    public void Read_LayerBeyondTheBase_BaseMismatch()
    {
        var e = Fails([0, 3]);
        Assert.Equal(RewardHeadFormatException.BaseMismatch, e.Code);
        Assert.Contains("reads base layer 3; the base model has layers 0..2", e.Message);
    }

    [Fact]
    public void Read_NoOrTooManySideLayers_InvalidConfig()
    {
        foreach (var layers in new[] { Array.Empty<int?>(), [null, null, null, null] })
        {
            var e = Fails(layers);
            Assert.Equal(RewardHeadFormatException.InvalidConfig, e.Code);
            Assert.Contains("between 1 and 3 side layers", e.Message);
        }
    }

    [Fact]
    public void Read_LayerCountOfAnotherBase_BaseMismatch()
    {
        var (config, tensors) = Files([0, 1]);
        var text = Encoding.UTF8.GetString(config).Replace("\"num_hidden_layers\":3", "\"num_hidden_layers\":2", StringComparison.Ordinal);
        var e = Assert.Throws<RewardHeadFormatException>(() => OtterReader.Read(Encoding.UTF8.GetBytes(text), tensors, Base));
        Assert.Equal(RewardHeadFormatException.BaseMismatch, e.Code);
    }
}
