using Xunit;
using Serving.Inference.Sampling;

namespace Serving.Inference.Tests.Sampling;

public sealed class SamplingAllocationTests
{
    private const int Vocab = 50_257;

    public static TheoryData<string, SamplingParameters> Configurations => new()
    {
        { "all options, top-k", new SamplingParameters { Temperature = 0.8f, TopK = 50, TopP = 0.9f, MinP = 0.05f, RepetitionPenalty = 1.1f, PresencePenalty = 0.3f, FrequencyPenalty = 0.2f, Seed = 1, TopLogprobs = 5 } },
        { "all options, large top-k", new SamplingParameters { Temperature = 0.8f, TopK = 5000, TopP = 0.9f, MinP = 0.05f, RepetitionPenalty = 1.1f, PresencePenalty = 0.3f, FrequencyPenalty = 0.2f, Seed = 1, TopLogprobs = 20 } },
        { "top-p over the whole vocabulary", new SamplingParameters { Temperature = 1.2f, TopP = 0.95f, MinP = 0.01f, RepetitionPenalty = 1.1f, PresencePenalty = 0.3f, FrequencyPenalty = 0.2f, TopLogprobs = 20 } },
        { "plain temperature", new SamplingParameters { Temperature = 0.7f } },
        { "greedy with logprobs", new SamplingParameters { Temperature = 0, RepetitionPenalty = 1.2f, TopLogprobs = 3 } },
        { "greedy", new SamplingParameters { Temperature = 0 } },
    };

    [Theory]
    [MemberData(nameof(Configurations))]
    public void SampleAndAccept_ManyTokens_AllocateNothing(string name, SamplingParameters p)
    {
        float[][] logits = Enumerable.Range(0, 8).Select(i => SamplingReference.PeakedLogits(Vocab, i)).ToArray();
        var sampler = new TokenSampler(p, Vocab, Enumerable.Range(0, 300).ToArray());
        var ids = new int[20];
        var lps = new float[20];

        void Step(int i)
        {
            // Alternate the two entry points: with the chosen token's logprob and without (what the scheduler calls
            // when a request did not ask for logprobs).
            int token = i % 2 == 0 ? sampler.Sample(logits[i % logits.Length], out _) : sampler.Sample(logits[i % logits.Length]);
            sampler.FillTopLogprobs(ids, lps);
            sampler.Accept(token);
        }

        for (int i = 0; i < 100; i++)
        {
            Step(i);   // warm up: tiered JIT, static caches of the sort helpers
        }
        // Steady state is what counts: a window of 300 tokens must allocate nothing. On a loaded machine the runtime's
        // tiering (call counting, a method's rejit landing late) can put a few one-off bytes on this thread in the
        // first window, so up to five windows are measured; a per-token allocation shows in every one of them.
        long allocated = 0;
        for (int window = 0; window < 5; window++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 300; i++)
            {
                Step(i);
            }
            allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            if (allocated == 0) break;
        }
        Assert.True(allocated == 0, $"{name}: {allocated} bytes allocated over 300 tokens");
    }
}
