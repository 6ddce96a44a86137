using Serving.AdapterStore.Peft;
using Serving.Checkpoints;

namespace Serving.AdapterStore.Tests.Peft;

/// <summary>
/// LoRA uploads built the way peft writes them against the published config.json of each base model family
/// (<c>tests/Shared/RealConfigs</c>): the real widths (GQA k/v narrower than q, Qwen3's 128-wide heads, Phi-3's fused
/// <c>qkv_proj</c>/<c>gate_up_proj</c>, Gemma's 256-wide heads) validate, and uploads built for another family or with a
/// wrong width get today's specific errors.
/// </summary>
public sealed class PublishedBaseTests
{
    public static TheoryData<string, int> Bases => new()
    {
        { "Llama-3.2-1B", 7 }, { "Llama-3.1-8B", 7 }, { "Qwen3-0.6B", 7 }, { "Phi-3-mini-4k-instruct", 4 }, { "gemma-2-2b", 7 }, { "Mistral-7B-v0.1", 7 },
    };

    private static BaseModelShape Shape(string name) =>
        BaseModelShape.FromConfig(ModelConfig.Load(Path.Combine(AppContext.BaseDirectory, "RealConfigs", name + ".json")));

    /// <summary>A rank-2 LoRA on every adaptable module of the first and last layer, targeted by module-name suffix.</summary>
    private static PeftFolder LoraFor(BaseModelShape shape, string baseModel, Func<string, (int In, int Out)>? widths = null, IReadOnlyList<string>? modules = null)
    {
        var rng = new Random(5);
        const int r = 2;
        var list = new List<(string, long[], float[])>();
        modules ??= shape.Modules;
        foreach (var layer in new[] { 0, shape.NumLayers - 1 })
        {
            foreach (var module in modules)
            {
                var (i, o) = widths?.Invoke(module) ?? shape.Widths(module)!.Value;
                string p = $"base_model.model.model.layers.{layer}.{module}";
                list.Add(($"{p}.lora_A.weight", [r, i], PeftFolders.Random(rng, r * i)));
                list.Add(($"{p}.lora_B.weight", [o, r], PeftFolders.Random(rng, o * r)));
            }
        }
        var targets = modules.Select(m => m[(m.LastIndexOf('.') + 1)..]).ToArray();
        return PeftFolders.Build(PeftFolders.LoraConfig(baseModel, r, 16, targets, fanInFanOut: false), list, SafetensorsDType.BF16);
    }

    [Theory]
    [MemberData(nameof(Bases))]
    public void Read_LoraOnEveryModule_ValidatesAgainstThePublishedConfig(string name, int modulesPerLayer)
    {
        var shape = Shape(name);
        Assert.Equal(modulesPerLayer, shape.Modules.Count);
        var folder = LoraFor(shape, name);
        var v = PeftAdapterReader.Read(folder.ConfigBytes, folder.Safetensors, shape);
        var adapter = AdapterMaterializer.Materialize(v.Payload);
        Assert.Equal(2 * modulesPerLayer, adapter.Modules.Count);
        foreach (var m in adapter.Modules)
        {
            Assert.Equal(shape.Widths(m.Module)!.Value, (m.InFeatures, m.OutFeatures));
            Assert.Equal(8f, m.Scale); // alpha 16 / r 2
        }
    }

    [Fact]
    public void Widths_PublishedConfigs_AreTheModelsOwn()
    {
        var phi3 = Shape("Phi-3-mini-4k-instruct");
        Assert.Equal(BaseModelShape.Phi3, phi3.Architecture);
        Assert.Equal((3072, 3 * 3072), phi3.Widths("self_attn.qkv_proj"));
        Assert.Equal((3072, 2 * 8192), phi3.Widths("mlp.gate_up_proj"));
        Assert.Null(phi3.Widths("self_attn.q_proj"));
        var qwen3 = Shape("Qwen3-0.6B");
        Assert.Equal((1024, 16 * 128), qwen3.Widths("self_attn.q_proj")); // head_dim 128: q is wider than hidden
        Assert.Equal((16 * 128, 1024), qwen3.Widths("self_attn.o_proj"));
        Assert.Equal((1024, 8 * 128), qwen3.Widths("self_attn.k_proj"));
        var gemma = Shape("gemma-2-2b");
        Assert.Equal((2304, 8 * 256), gemma.Widths("self_attn.q_proj"));
        var llama = Shape("Llama-3.1-8B");
        Assert.Equal((4096, 1024), llama.Widths("self_attn.v_proj"));
        Assert.Equal((14336, 4096), llama.Widths("mlp.down_proj"));
    }

    [Fact]
    public void Read_SeparateProjectionsOnPhi3_IsABaseModelMismatch()
    {
        var phi3 = Shape("Phi-3-mini-4k-instruct");
        var llamaStyle = Shape("Mistral-7B-v0.1");
        var folder = LoraFor(phi3, "phi3", widths: m => llamaStyle.Widths(m)!.Value, modules: ["self_attn.q_proj", "self_attn.v_proj"]);
        var e = Assert.Throws<AdapterValidationException>(() => PeftAdapterReader.Read(folder.ConfigBytes, folder.Safetensors, phi3));
        Assert.Equal(AdapterErrors.BaseModelMismatch, e.Code);
        Assert.Contains("a llama module; the base model is phi3", e.Message);
    }

    [Fact]
    public void Read_FusedProjectionsOnLlama_IsABaseModelMismatch()
    {
        var phi3 = Shape("Phi-3-mini-4k-instruct");
        var llama = Shape("Llama-3.2-1B");
        var folder = LoraFor(llama, "llama", widths: m => phi3.Widths(m)!.Value, modules: ["self_attn.qkv_proj"]);
        var e = Assert.Throws<AdapterValidationException>(() => PeftAdapterReader.Read(folder.ConfigBytes, folder.Safetensors, llama));
        Assert.Equal(AdapterErrors.BaseModelMismatch, e.Code);
        Assert.Contains("a phi3 module; the base model is llama", e.Message);
    }

    [Fact]
    public void Read_FusedQkvOfAnotherPhi3Width_IsAShapeMismatchNamingTheTensor()
    {
        var phi3 = Shape("Phi-3-mini-4k-instruct");
        // Built for a model whose q|k|v output differs (e.g. GQA): the B factor's rows are wrong.
        var folder = LoraFor(phi3, "phi3", widths: m => m == "self_attn.qkv_proj" ? (3072, 3072 + 2 * 1024) : phi3.Widths(m)!.Value);
        var e = Assert.Throws<AdapterValidationException>(() => PeftAdapterReader.Read(folder.ConfigBytes, folder.Safetensors, phi3));
        Assert.Equal(AdapterErrors.ShapeMismatch, e.Code);
        Assert.Equal("base_model.model.model.layers.0.self_attn.qkv_proj.lora_B.weight", e.Tensor);
        Assert.Contains("has shape [5120, 2], expected [9216, *]", e.Message);
    }

    [Fact]
    public void Read_Qwen3AdapterBuiltForHiddenWideHeads_IsAShapeMismatch()
    {
        // A converter that assumed head_dim = hidden / heads (64) would write q_proj B as [1024, r], not [2048, r].
        var qwen3 = Shape("Qwen3-0.6B");
        var folder = LoraFor(qwen3, "qwen3", widths: m => m == "self_attn.q_proj" ? (1024, 1024) : qwen3.Widths(m)!.Value, modules: ["self_attn.q_proj"]);
        var e = Assert.Throws<AdapterValidationException>(() => PeftAdapterReader.Read(folder.ConfigBytes, folder.Safetensors, qwen3));
        Assert.Equal(AdapterErrors.ShapeMismatch, e.Code);
        Assert.Contains("has shape [1024, 2], expected [2048, *]", e.Message);
    }
}
