using Xunit;
using Serving.Inference.Sampling;

namespace Serving.Inference.Tests.Sampling;

public sealed class SamplingParametersTests
{
    public static TheoryData<SamplingParameters, string> Invalid => new()
    {
        { new SamplingParameters { Temperature = -0.1f }, "temperature" },
        { new SamplingParameters { Temperature = 2.5f }, "temperature" },
        { new SamplingParameters { Temperature = float.NaN }, "temperature" },
        { new SamplingParameters { TopP = 0f }, "top_p" },
        { new SamplingParameters { TopP = 1.01f }, "top_p" },
        { new SamplingParameters { TopK = -2 }, "top_k" },
        { new SamplingParameters { MinP = -0.01f }, "min_p" },
        { new SamplingParameters { MinP = 1.5f }, "min_p" },
        { new SamplingParameters { RepetitionPenalty = 0f }, "repetition_penalty" },
        { new SamplingParameters { RepetitionPenalty = float.PositiveInfinity }, "repetition_penalty" },
        { new SamplingParameters { PresencePenalty = 2.1f }, "presence_penalty" },
        { new SamplingParameters { FrequencyPenalty = -2.1f }, "frequency_penalty" },
        { new SamplingParameters { MaxTokens = 0 }, "max_tokens" },
        { new SamplingParameters { TopLogprobs = 21 }, "top_logprobs" },
        { new SamplingParameters { TopLogprobs = -1 }, "top_logprobs" },
        { new SamplingParameters { StopStrings = ["ok", ""] }, "stop" },
        { new SamplingParameters { StopTokenIds = [5, 100] }, "stop_token_ids" },
        { new SamplingParameters { StopTokenIds = [-1] }, "stop_token_ids" },
    };

    [Theory]
    [MemberData(nameof(Invalid))]
    public void Validate_OutOfRange_NamesOpenAIParameter(SamplingParameters p, string param)
    {
        var ex = Assert.Throws<SamplingParameterException>(() => p.Validate(vocabSize: 100));
        Assert.Equal(param, ex.Param);
        Assert.Contains(param, ex.Message);
    }

    [Fact]
    public void Defaults_AreOpenAIsAndValid()
    {
        var p = new SamplingParameters();
        p.Validate(100);
        Assert.Equal(1f, p.Temperature);
        Assert.Equal(1f, p.TopP);
        Assert.Equal(0, p.TopK);
        Assert.Equal(0f, p.MinP);
        Assert.Equal(1f, p.RepetitionPenalty);
        Assert.Equal(0f, p.PresencePenalty);
        Assert.Equal(0f, p.FrequencyPenalty);
        Assert.Null(p.Seed);
        Assert.Null(p.TopLogprobs);
        Assert.Empty(p.StopStrings);
        Assert.Empty(p.StopTokenIds);
        Assert.False(p.IsGreedy);
        Assert.False(p.HasPenalties);
    }

    [Fact]
    public void Validate_BoundaryValues_Accepted()
    {
        new SamplingParameters { Temperature = 0, TopP = 1, TopK = -1, MinP = 1, PresencePenalty = -2, FrequencyPenalty = 2, TopLogprobs = 20, MaxTokens = 1, StopTokenIds = [99] }.Validate(100);
        new SamplingParameters { Temperature = 2, TopK = 1_000_000, TopLogprobs = 0 }.Validate(100);
    }

    [Fact]
    public void Validate_NonPositiveVocabulary_Throws()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new SamplingParameters().Validate(0));
    }
}
