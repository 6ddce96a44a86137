using Serving.Checkpoints;
using Serving.Fixtures;
using Serving.Inference.Engine;
using Serving.Inference.Runtime;
using Xunit;

namespace Serving.Inference.Tests.Engine;

public sealed class CheckpointErrorTests
{
    private static string CopyOfTinyLlama(string name)
    {
        var dir = Path.Combine(Path.GetTempPath(), "serving-ckpt-" + Guid.NewGuid().ToString("N")[..8], name);
        FixtureCheckpoint.Write(dir, FixtureShape.TinyLlama with { Layers = 1 });
        return dir;
    }

    [Fact]
    public void Load_MissingTensor_NamesIt()
    {
        var dir = CopyOfTinyLlama("missing");
        var path = Path.Combine(dir, "model.safetensors");
        using (var file = SafetensorsFile.Open(path))
        {
            var kept = file.Tensors.Values.Where(t => t.Name != "model.layers.0.mlp.up_proj.weight").OrderBy(t => t.Begin)
                .Select(t => new SafetensorsWriter.Entry(t.Name, t.DType, t.Shape, file.GetBytes(t.Name).ToArray())).ToList();
            file.Dispose();
            SafetensorsWriter.Write(path, kept);
        }
        var e = Assert.Throws<SafetensorsFormatException>(() => DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = 1, MaxContext = 16 }).Dispose());
        Assert.Equal("model.layers.0.mlp.up_proj.weight", e.TensorName);
        Assert.Contains("missing tensor", e.Message);
    }

    [Fact]
    public void Load_WrongShape_NamesTensorAndShapes()
    {
        var dir = CopyOfTinyLlama("shape");
        var config = File.ReadAllText(Path.Combine(dir, "config.json")).Replace("\"intermediate_size\": 96", "\"intermediate_size\": 64", StringComparison.Ordinal);
        File.WriteAllText(Path.Combine(dir, "config.json"), config);
        var e = Assert.Throws<SafetensorsFormatException>(() => DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = 1, MaxContext = 16 }).Dispose());
        Assert.Contains("does not match the expected", e.Message);
        Assert.Contains("mlp.", e.TensorName);
    }

    [Fact]
    public void Load_TruncatedWeights_Rejected()
    {
        var dir = CopyOfTinyLlama("truncated");
        var path = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
        var e = Assert.Throws<SafetensorsFormatException>(() => DecoderModel.Load(dir).Dispose());
        Assert.Contains("beyond the data buffer", e.Message);
    }

    [Fact]
    public void Load_ConfigMissingKey_Rejected()
    {
        var dir = CopyOfTinyLlama("config");
        var config = File.ReadAllText(Path.Combine(dir, "config.json")).Replace("\"num_hidden_layers\"", "\"layers\"", StringComparison.Ordinal);
        File.WriteAllText(Path.Combine(dir, "config.json"), config);
        var e = Assert.Throws<ModelConfigException>(() => DecoderModel.Load(dir).Dispose());
        Assert.Contains("missing required key 'num_hidden_layers'", e.Message);
    }

    [Fact]
    public void Load_NoWeightsFile_Rejected()
    {
        var dir = CopyOfTinyLlama("noweights");
        File.Delete(Path.Combine(dir, "model.safetensors"));
        File.WriteAllText(Path.Combine(dir, "pytorch_model.bin"), "pickle");
        var e = Assert.Throws<SafetensorsFormatException>(() => DecoderModel.Load(dir).Dispose());
        Assert.Contains("pickle", e.Message);
    }
}
