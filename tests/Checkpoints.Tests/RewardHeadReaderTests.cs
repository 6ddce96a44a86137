using System.Text;
using Serving.Checkpoints.RewardHeads;
using Xunit;

namespace Serving.Checkpoints.Tests;

/// <summary>Every rule of the reward-head format, each broken once: a specific code and a message naming what to fix.</summary>
public sealed class RewardHeadReaderTests
{
    private static readonly ModelConfig Base = ModelConfig.Parse("""{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":8,"num_hidden_layers":3,"num_attention_heads":2,"num_key_value_heads":1,"intermediate_size":16,"vocab_size":32,"max_position_embeddings":64,"rms_norm_eps":1e-5,"tie_word_embeddings":true}""");

    private const string Config = """{"kind":"reward-head","layer":2,"input":"final_norm","pooling":"sum","activation":"tanh","layers":[{"weight":"l0.w","bias":"l0.b"},{"weight":"l1.w","bias":"l1.b"}]}""";

    private static byte[] Tensors(int inWidth = 8, int hidden = 4, int outWidth = 1, float poison = 0.5f, bool dropBias = false)
    {
        var entries = new List<SafetensorsWriter.Entry>
        {
            SafetensorsWriter.Entry.F32("l0.w", [hidden, inWidth], Enumerable.Repeat(0.1f, hidden * inWidth).ToArray()),
            SafetensorsWriter.Entry.F32("l1.w", [outWidth, hidden], Enumerable.Repeat(poison, outWidth * hidden).ToArray()),
            SafetensorsWriter.Entry.F32("l1.b", [outWidth], new float[outWidth]),
        };
        if (!dropBias) entries.Add(SafetensorsWriter.Entry.F32("l0.b", [hidden], new float[hidden]));
        return SafetensorsWriter.ToBytes(entries);
    }

    private static RewardHeadFormatException Fails(string config, byte[] tensors) =>
        Assert.Throws<RewardHeadFormatException>(() => RewardHeadReader.Read(Encoding.UTF8.GetBytes(config), tensors, Base));

    [Fact]
    public void Read_ValidHead_ReturnsItsDefinition()
    {
        var head = RewardHeadReader.Read(Encoding.UTF8.GetBytes(Config), Tensors(), Base);
        Assert.Equal(2, head.Layer);
        Assert.Equal(RewardPooling.Sum, head.Pooling);
        Assert.Equal(RewardActivation.Tanh, head.Activation);
        Assert.Equal([8, 4], head.Layers.Select(l => l.In));
        Assert.Equal(4 * 8 + 4 + 4 + 1, head.Parameters);
    }

    [Theory]
    [InlineData("not json", "not valid JSON")]
    [InlineData("""{"kind":"adapter","layer":1,"layers":[{"weight":"l0.w"}]}""", "\"kind\" must be \"reward-head\"")]
    [InlineData("""{"kind":"reward-head","layers":[{"weight":"l0.w"}]}""", "\"layer\" must be an integer")]
    [InlineData("""{"kind":"reward-head","layer":1,"pooling":"max","layers":[{"weight":"l0.w"}]}""", "\"pooling\"")]
    [InlineData("""{"kind":"reward-head","layer":1,"activation":"softplus","layers":[{"weight":"l0.w"}]}""", "softplus")]
    [InlineData("""{"kind":"reward-head","layer":1,"input":"logits","layers":[{"weight":"l0.w"}]}""", "\"input\"")]
    [InlineData("""{"kind":"reward-head","layer":1,"layers":[]}""", "\"layers\" must be a non-empty list")]
    public void Read_BadConfig_InvalidHeadConfig(string config, string messagePart)
    {
        var e = Fails(config, Tensors());
        Assert.Equal(RewardHeadFormatException.InvalidConfig, e.Code);
        Assert.Contains(messagePart, e.Message);
    }

    [Fact]
    public void Read_LayerBeyondTheBase_BaseMismatch()
    {
        var e = Fails(Config.Replace("\"layer\":2", "\"layer\":4"), Tensors());
        Assert.Equal(RewardHeadFormatException.BaseMismatch, e.Code);
        Assert.Contains("layers 0 (embedding output) to 3", e.Message);
    }

    [Fact]
    public void Read_InputWidthOfAnotherBase_BaseMismatch()
    {
        var e = Fails(Config, Tensors(inWidth: 16));
        Assert.Equal(RewardHeadFormatException.BaseMismatch, e.Code);
        Assert.Contains("hidden size is 8", e.Message);
    }

    [Fact]
    public void Read_MissingTensor_InvalidTensorsNamingIt()
    {
        var e = Fails(Config, Tensors(dropBias: true));
        Assert.Equal(RewardHeadFormatException.InvalidTensors, e.Code);
        Assert.Contains("'l0.b'", e.Message);
    }

    [Fact]
    public void Read_NonFiniteValue_InvalidTensors()
    {
        var e = Fails(Config, Tensors(poison: float.NaN));
        Assert.Equal(RewardHeadFormatException.InvalidTensors, e.Code);
        Assert.Contains("non-finite", e.Message);
    }

    [Fact]
    public void Read_TwoOutputs_InvalidTensors()
    {
        var e = Fails(Config, Tensors(outWidth: 2));
        Assert.Equal(RewardHeadFormatException.InvalidTensors, e.Code);
        Assert.Contains("one value", e.Message);
    }

    [Fact]
    public void Read_GarbageSafetensors_InvalidTensors()
    {
        var e = Fails(Config, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
        Assert.Equal(RewardHeadFormatException.InvalidTensors, e.Code);
    }
}
