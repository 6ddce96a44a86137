using Serving.Checkpoints;
using Xunit;

namespace Serving.Checkpoints.Tests;

public sealed class ModelConfigTests
{
    [Fact]
    public void Parse_Gpt2_ReadsGpt2Keys()
    {
        var c = ModelConfig.Parse("""{"architectures":["GPT2LMHeadModel"],"model_type":"gpt2","n_embd":768,"n_layer":12,"n_head":12,"n_positions":1024,"vocab_size":50257,"layer_norm_epsilon":1e-5,"n_inner":null}""");
        Assert.Equal(ModelArchitecture.Gpt2, c.Architecture);
        Assert.Equal(3072, c.IntermediateSize);
        Assert.Equal(64, c.HeadDim);
        Assert.True(c.TieWordEmbeddings);
        Assert.Equal(1024, c.MaxPositions);
    }

    [Fact]
    public void Parse_SmolLmShape_ReadsGqaAndRope()
    {
        var c = ModelConfig.Parse("""{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":576,"num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,"intermediate_size":1536,"vocab_size":49152,"max_position_embeddings":8192,"rms_norm_eps":1e-5,"rope_theta":100000,"tie_word_embeddings":true,"rope_scaling":null}""");
        Assert.Equal(ModelArchitecture.Llama, c.Architecture);
        Assert.Equal(3, c.NumKvHeads);
        Assert.Equal(64, c.HeadDim);
        Assert.Equal(100000f, c.RopeTheta);
        Assert.True(c.TieWordEmbeddings);
        Assert.False(c.AttentionBias);
    }

    [Fact]
    public void Parse_Qwen2_HasQkvBias()
    {
        var c = ModelConfig.Parse("""{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"intermediate_size":128,"vocab_size":100,"max_position_embeddings":512}""");
        Assert.True(c.AttentionBias);
    }

    [Theory]
    [InlineData("""{"architectures":["BertModel"]}""", "unsupported architecture 'BertModel'")]
    [InlineData("""{"model_type":"t5"}""", "unsupported model_type 't5'")]
    [InlineData("""{"vocab_size":3}""", "neither 'architectures' nor 'model_type'")]
    [InlineData("""{"architectures":["LlamaForCausalLM"],"num_hidden_layers":2}""", "missing required key 'hidden_size'")]
    [InlineData("""{"architectures":["GPT2LMHeadModel"],"n_embd":64,"n_head":4,"n_layer":2,"vocab_size":10}""", "missing required key 'n_ctx'")]
    [InlineData("""{"architectures":["LlamaForCausalLM"],"hidden_size":"big"}""", "key 'hidden_size' must be an integer")]
    [InlineData("""{"architectures":["LlamaForCausalLM"],"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":3,"intermediate_size":128,"vocab_size":100,"max_position_embeddings":512}""", "multiple of key/value heads")]
    [InlineData("""{"architectures":["LlamaForCausalLM"],"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"intermediate_size":128,"vocab_size":100,"max_position_embeddings":512,"rope_scaling":{"rope_type":"yarn"}}""", "rope_scaling.factor")]
    [InlineData("not json", "not valid JSON")]
    public void Parse_Invalid_ThrowsReadableError(string json, string expected)
    {
        var e = Assert.Throws<ModelConfigException>(() => ModelConfig.Parse(json));
        Assert.Contains(expected, e.Message);
    }
    private const string Small = """
        "architectures":["LlamaForCausalLM"],"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"intermediate_size":128,"vocab_size":100,"max_position_embeddings":512
        """;

    private static ModelConfig Published(string name) => ModelConfig.Load(Path.Combine(AppContext.BaseDirectory, "RealConfigs", name + ".json"));

    [Fact]
    public void Parse_PublishedLlama32_1B_ReadsLlama3RopeAndTiedHead()
    {
        var c = Published("Llama-3.2-1B");
        Assert.Equal(("LlamaForCausalLM", 16, 2048, 32, 8, 64, 8192, 128256), (c.ArchitectureName, c.NumLayers, c.HiddenSize, c.NumHeads, c.NumKvHeads, c.HeadDim, c.IntermediateSize, c.VocabSize));
        Assert.Equal(RopeType.Llama3, c.Rope.Type);
        Assert.Equal((32.0, 1.0, 4.0, 8192), (c.Rope.Factor, c.Rope.LowFreqFactor, c.Rope.HighFreqFactor, c.Rope.OriginalMaxPositions));
        Assert.Equal(500000f, c.RopeTheta);
        Assert.True(c.TieWordEmbeddings);
        Assert.Equal(131072, c.MaxPositions);
        Assert.Empty(c.SlidingWindows);
    }

    [Fact]
    public void Parse_PublishedLlama31_8B_ReadsLlama3RopeAndSeparateHead()
    {
        var c = Published("Llama-3.1-8B");
        Assert.Equal((32, 4096, 32, 8, 128, 14336), (c.NumLayers, c.HiddenSize, c.NumHeads, c.NumKvHeads, c.HeadDim, c.IntermediateSize));
        Assert.Equal((RopeType.Llama3, 8.0, 8192), (c.Rope.Type, c.Rope.Factor, c.Rope.OriginalMaxPositions));
        Assert.False(c.TieWordEmbeddings);
    }

    [Fact]
    public void Parse_PublishedQwen3_0_6B_ReadsQkNormAndExplicitHeadDim()
    {
        var c = Published("Qwen3-0.6B");
        Assert.Equal(("Qwen3ForCausalLM", 28, 1024, 16, 8, 128, 3072), (c.ArchitectureName, c.NumLayers, c.HiddenSize, c.NumHeads, c.NumKvHeads, c.HeadDim, c.IntermediateSize));
        Assert.True(c.QkNorm);
        Assert.False(c.AttentionBias);
        Assert.Empty(c.SlidingWindows); // use_sliding_window: false
        Assert.Equal((RopeType.Default, 1000000f), (c.Rope.Type, c.RopeTheta));
        Assert.Equal(1e-6f, c.NormEps);
    }

    [Fact]
    public void Parse_PublishedPhi3Mini4k_ReadsFusedProjectionsAndWindow()
    {
        var c = Published("Phi-3-mini-4k-instruct");
        Assert.Equal(("Phi3ForCausalLM", 32, 3072, 32, 32, 96, 8192, 32064), (c.ArchitectureName, c.NumLayers, c.HiddenSize, c.NumHeads, c.NumKvHeads, c.HeadDim, c.IntermediateSize, c.VocabSize));
        Assert.True(c.FusedProjections);
        Assert.All(Enumerable.Range(0, c.NumLayers), l => Assert.Equal(2047, c.SlidingWindow(l)));
        Assert.Equal(96, c.RotaryDim);
        Assert.Equal(4096, c.MaxPositions);
    }

    [Fact]
    public void Parse_PublishedGemma2_2b_ReadsEveryGemmaFeature()
    {
        var c = Published("gemma-2-2b");
        Assert.Equal(("Gemma2ForCausalLM", 26, 2304, 8, 4, 256, 9216, 256000), (c.ArchitectureName, c.NumLayers, c.HiddenSize, c.NumHeads, c.NumKvHeads, c.HeadDim, c.IntermediateSize, c.VocabSize));
        Assert.True(c.GeluGate);
        Assert.True(c.SandwichNorms);
        Assert.Equal(1f, c.NormWeightOffset);
        Assert.Equal(48f, c.EmbeddingScale);
        Assert.Equal((50f, 30f), (c.AttentionSoftcap, c.FinalLogitSoftcap));
        Assert.Equal(1f / 16, c.AttentionScale);
        Assert.True(c.TieWordEmbeddings); // Gemma2Config's default: the file does not say
        for (var l = 0; l < c.NumLayers; l++) Assert.Equal(l % 2 == 0 ? 4096 : 0, c.SlidingWindow(l));
    }

    [Fact]
    public void Parse_PublishedMistral7B_v01_WindowsEveryLayerWithoutCappingTheContext()
    {
        var c = Published("Mistral-7B-v0.1");
        Assert.Equal(("MistralForCausalLM", 32, 4096, 32, 8, 128, 14336), (c.ArchitectureName, c.NumLayers, c.HiddenSize, c.NumHeads, c.NumKvHeads, c.HeadDim, c.IntermediateSize));
        Assert.All(Enumerable.Range(0, c.NumLayers), l => Assert.Equal(4096, c.SlidingWindow(l)));
        Assert.Equal(32768, c.MaxPositions);
    }

    [Fact]
    public void Parse_RopeParametersOf5x_ReadLikeRopeScaling()
    {
        var legacy = ModelConfig.Parse("{" + Small + ""","rope_theta":500000,"rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":128}}""");
        var modern = ModelConfig.Parse("{" + Small + ""","rope_parameters":{"rope_type":"llama3","rope_theta":500000,"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":128}}""");
        Assert.Equal(legacy.Rope, modern.Rope);
        Assert.Equal(legacy.RopeTheta, modern.RopeTheta);
    }

    [Fact]
    public void Parse_Yarn_ReadsFactorOriginalLengthAndDefaults()
    {
        var c = ModelConfig.Parse("{" + Small + ""","rope_scaling":{"type":"yarn","factor":4.0,"original_max_position_embeddings":128}}""");
        Assert.Equal((RopeType.Yarn, 4.0, 128, 32.0, 1.0, true), (c.Rope.Type, c.Rope.Factor, c.Rope.OriginalMaxPositions, c.Rope.BetaFast, c.Rope.BetaSlow, c.Rope.Truncate));
        Assert.Null(c.Rope.AttentionFactor);
        Assert.Equal(512, c.MaxPositions);
    }

    [Fact]
    public void Parse_DynamicNtk_ExtendsTheContextByTheFactor()
    {
        var c = ModelConfig.Parse("{" + Small + ""","rope_scaling":{"type":"dynamic","factor":2.0}}""");
        Assert.Equal((RopeType.Dynamic, 512), (c.Rope.Type, c.Rope.OriginalMaxPositions));
        Assert.Equal(1024, c.MaxPositions);
    }

    [Fact]
    public void Parse_PartialRotaryFactor_RotatesThatFractionOfEachHead()
    {
        var c = ModelConfig.Parse("{" + Small + ""","partial_rotary_factor":0.5}""");
        Assert.Equal((16, 8), (c.HeadDim, c.RotaryDim));
    }

    [Fact]
    public void Parse_MistralWithoutWindowKey_DefaultsTo4096AndNullTurnsItOff()
    {
        var absent = ModelConfig.Parse("""{"architectures":["MistralForCausalLM"],"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"intermediate_size":128,"vocab_size":100,"max_position_embeddings":512}""");
        var off = ModelConfig.Parse("""{"architectures":["MistralForCausalLM"],"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"intermediate_size":128,"vocab_size":100,"max_position_embeddings":512,"sliding_window":null}""");
        Assert.Equal([4096, 4096], absent.SlidingWindows);
        Assert.Empty(off.SlidingWindows);
    }

    [Fact]
    public void Parse_QwenSlidingWindow_AppliesFromMaxWindowLayersOrAsLayerTypesSay()
    {
        var byLayer = ModelConfig.Parse("""{"architectures":["Qwen3ForCausalLM"],"hidden_size":64,"num_hidden_layers":3,"num_attention_heads":4,"intermediate_size":128,"vocab_size":100,"max_position_embeddings":512,"use_sliding_window":true,"sliding_window":16,"max_window_layers":1}""");
        var byTypes = ModelConfig.Parse("""{"architectures":["Qwen3ForCausalLM"],"hidden_size":64,"num_hidden_layers":3,"num_attention_heads":4,"intermediate_size":128,"vocab_size":100,"max_position_embeddings":512,"use_sliding_window":true,"sliding_window":16,"layer_types":["sliding_attention","full_attention","sliding_attention"]}""");
        Assert.Equal([0, 16, 16], byLayer.SlidingWindows);
        Assert.Equal([16, 0, 16], byTypes.SlidingWindows);
    }

    [Theory]
    [InlineData(""","rope_scaling":{"rope_type":"longrope","short_factor":[1],"long_factor":[1]}""", "rope_scaling.rope_type: 'longrope'")]
    [InlineData(""","rope_scaling":{"rope_type":"mrope","factor":2.0}""", "rope_scaling.rope_type: 'mrope' is not supported")]
    [InlineData(""","rope_scaling":{"rope_type":"linear","factor":0.5}""", "rope_scaling.factor: must be a finite number >= 1")]
    [InlineData(""","rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":4.0,"high_freq_factor":1.0}""", "rope_scaling.high_freq_factor")]
    [InlineData(""","rope_parameters":{"full_attention":{"rope_type":"default"},"sliding_attention":{"rope_type":"default"}}""", "rope_parameters: rotary parameters per layer type")]
    [InlineData(""","partial_rotary_factor":0.2""", "partial_rotary_factor 0.2 leaves 3 rotary dimensions")]
    [InlineData(""","partial_rotary_factor":0.05""", "leaves 0 rotary dimensions of 16; they must be positive and even")]
    public void Parse_UnsupportedRotary_RefusesNamingTheField(string extra, string expected)
    {
        var e = Assert.Throws<ModelConfigException>(() => ModelConfig.Parse("{" + Small + extra + "}"));
        Assert.Contains(expected, e.Message);
    }

    [Theory]
    [InlineData("""{"architectures":["Gemma2ForCausalLM"],"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"intermediate_size":128,"vocab_size":100,"max_position_embeddings":512,"use_bidirectional_attention":true}""", "use_bidirectional_attention")]
    [InlineData("""{"architectures":["Gemma2ForCausalLM"],"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"intermediate_size":128,"vocab_size":100,"max_position_embeddings":512,"hidden_activation":"gelu"}""", "hidden_activation: 'gelu' is not supported")]
    [InlineData("""{"architectures":["Gemma2ForCausalLM"],"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"intermediate_size":128,"vocab_size":100,"max_position_embeddings":512,"layer_types":["sliding_attention","chunked_attention"]}""", "layer_types: layer 1 is 'chunked_attention'")]
    [InlineData("""{"architectures":["Qwen3ForCausalLM"],"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"intermediate_size":128,"vocab_size":100,"max_position_embeddings":512,"layer_types":["full_attention"]}""", "layer_types: lists 1 layers, the model has 2")]
    [InlineData("""{"architectures":["MistralForCausalLM"],"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"intermediate_size":128,"vocab_size":100,"max_position_embeddings":512,"sliding_window":0}""", "sliding_window: must be positive")]
    [InlineData("""{"architectures":["Phi3ForCausalLM"],"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"intermediate_size":128,"vocab_size":100,"max_position_embeddings":512,"hidden_act":"gelu_new"}""", "hidden_act: 'gelu_new' is not supported (silu)")]
    [InlineData("""{"architectures":["Gemma3ForCausalLM"]}""", "unsupported architecture 'Gemma3ForCausalLM'")]
    public void Parse_UnsupportedFamilyFeature_RefusesNamingTheField(string json, string expected)
    {
        var e = Assert.Throws<ModelConfigException>(() => ModelConfig.Parse(json));
        Assert.Contains(expected, e.Message);
    }
}
