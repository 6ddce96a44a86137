using Xunit;
using Serving.Inference.Sampling;

namespace Serving.Inference.Tests.Sampling;

public sealed class StopCriteriaTests
{
    private const int Eos = 50256;

    [Fact]
    public void Check_StopTokenId_Stops()
    {
        var criteria = new StopCriteria(new SamplingParameters { StopTokenIds = [13, 198], MaxTokens = 100 }, [Eos]);
        Assert.Null(criteria.Check(12, 1));
        Assert.Equal(FinishReason.Stop, criteria.Check(198, 2));
    }

    [Fact]
    public void Check_Eos_StopsUnlessIgnored()
    {
        Assert.Equal(FinishReason.Stop, new StopCriteria(new SamplingParameters { MaxTokens = 100 }, [Eos]).Check(Eos, 1));
        var ignoring = new StopCriteria(new SamplingParameters { MaxTokens = 100, IgnoreEos = true, StopTokenIds = [7] }, [Eos]);
        Assert.Null(ignoring.Check(Eos, 1));
        Assert.Equal(FinishReason.Stop, ignoring.Check(7, 2));
    }

    [Fact]
    public void Check_MaxTokens_EndsWithLengthAtExactlyTheLimit()
    {
        const int max = 5;
        var p = new SamplingParameters { MaxTokens = max, Seed = 1 };
        var sampler = new TokenSampler(p, 100, []);
        var criteria = new StopCriteria(p, [99]);
        float[] logits = new float[100];
        logits[99] = -100f;   // EOS (id 99 here) effectively never drawn
        FinishReason? reason = null;
        int generated = 0;
        while (reason is null)
        {
            int token = sampler.Sample(logits, out _);
            sampler.Accept(token);
            generated++;
            reason = criteria.Check(token, sampler.GeneratedCount);
        }
        Assert.Equal(FinishReason.Length, reason);
        Assert.Equal(max, generated);
    }

    [Fact]
    public void Check_StopTokenOnLastAllowedToken_ReportsStop()
    {
        var criteria = new StopCriteria(new SamplingParameters { MaxTokens = 3 }, [Eos]);
        Assert.Equal(FinishReason.Stop, criteria.Check(Eos, 3));
        Assert.Equal(FinishReason.Length, criteria.Check(1, 3));
    }

    [Fact]
    public void ToOpenAIString_UsesWireNames()
    {
        Assert.Equal("stop", FinishReason.Stop.ToOpenAIString());
        Assert.Equal("length", FinishReason.Length.ToOpenAIString());
    }
}
