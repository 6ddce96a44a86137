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
    [InlineData("""{"architectures":["LlamaForCausalLM"],"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"intermediate_size":128,"vocab_size":100,"max_position_embeddings":512,"rope_scaling":{"rope_type":"yarn"}}""", "rope_scaling type 'yarn'")]
    [InlineData("not json", "not valid JSON")]
    public void Parse_Invalid_ThrowsReadableError(string json, string expected)
    {
        var e = Assert.Throws<ModelConfigException>(() => ModelConfig.Parse(json));
        Assert.Contains(expected, e.Message);
    }
}
