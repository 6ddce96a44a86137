using Serving.AdapterStore.Peft;
using Serving.Checkpoints;

namespace Serving.AdapterStore.Tests.Peft;

/// <summary>An adapter written by the demo forge (peft 0.14.0 format, regex target_modules, fp32) for its smoke model.</summary>
public sealed class ForgeFixtureTests
{
    private static string Dir => Path.Combine(AppContext.BaseDirectory, "Fixtures", "forge-smoke");

    [Fact]
    public void Read_ForgeSmokeAdapter_ValidatesAndMaterialisesAsWritten()
    {
        var shape = BaseModelShape.FromConfig(ModelConfig.Load(Path.Combine(Dir, "config.json")));
        byte[] config = File.ReadAllBytes(Path.Combine(Dir, "food", "adapter_config.json"));
        byte[] weights = File.ReadAllBytes(Path.Combine(Dir, "food", "adapter_model.safetensors"));
        var v = PeftAdapterReader.Read(config, weights, shape);
        var adapter = AdapterMaterializer.Materialize(v.Payload);
        Assert.Equal(["self_attn.q_proj", "self_attn.v_proj", "mlp.up_proj", "mlp.down_proj"], adapter.Modules.Select(m => m.Module));
        Assert.All(adapter.Modules, m => Assert.Equal(1, m.Layer));
        Assert.All(adapter.Modules, m => Assert.Equal(1f, m.Scale)); // lora_alpha 8 / r 8
        Assert.Equal(32, adapter.Find(1, "self_attn.v_proj")!.OutFeatures); // 2 kv heads × 16
        using var file = SafetensorsFile.Parse(weights);
        Assert.Equal(file.ReadFloat32("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"), adapter.Find(1, "mlp.down_proj")!.B);
        Assert.Empty(v.Notes); // every key peft 0.14.0 writes is known
    }
}
