using Serving.Inference.Decoding;
using Serving.Inference.Engine;
using Serving.Inference.Runtime;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;
using Serving.Inference.Tests.Engine;
using Serving.Inference.Tokenization;
using Xunit;

namespace Serving.Inference.Tests.Decoding;

/// <summary>Prompt scoring (echo + logprobs) through the scheduler against a teacher-forced log-softmax computed here in double.</summary>
public sealed class PromptLogprobsTests : IDisposable
{
    private readonly DecoderModel _model = DecoderModel.Load(DemoModelReferenceTests.DemoDirectory, new RuntimeOptions { MaxBatch = 4, MaxContext = 256 });
    private readonly ITokenizer _tokenizer;

    public PromptLogprobsTests() => _tokenizer = TokenizerLoader.Load(DemoModelReferenceTests.DemoDirectory, _model.Config.VocabSize);

    public void Dispose() => _model.Dispose();

    [Theory]
    [InlineData(512)] // one iteration prefills the whole prompt, in chunks of 32
    [InlineData(5)]   // the budget runs out: prompt tokens are fed by decode steps between chunks
    public void PromptLogprobs_EqualTheTeacherForcedLogSoftmax(int prefillBudget)
    {
        var prompt = _tokenizer.Encode("<|endoftext|>" + string.Concat(Enumerable.Repeat("The cat sat on the mat, and the dog barked all night long at the moon. ", 3)));
        Assert.True(prompt.Length > 32, "the prompt must span several chunks");
        using var dec = new BatchDecoder(_model, 2);
        using var scheduler = new GenerationScheduler(dec, _tokenizer, new SchedulerOptions { MaxPrefillTokensPerStep = prefillBudget });
        var request = new GenerationRequest
        {
            PromptTokens = prompt,
            Sampling = new SamplingParameters { MaxTokens = 1 },
            PromptLogprobs = 3,
            Decoding = ScoreOnlySpec.Instance,
        };
        Assert.Equal(SubmitStatus.Accepted, scheduler.Submit(request, out var handle));
        for (var i = 0; i < 1000 && !handle!.Events.Completion.IsCompleted; i++) scheduler.Step();
        var events = new List<GenerationEvent>();
        while (handle!.Events.TryRead(out var e)) events.Add(e);
        Assert.Equal(FinishReason.Length, events.Single(e => e.Kind == GenerationEventKind.Finished).FinishReason);
        Assert.DoesNotContain(events, e => e.Kind == GenerationEventKind.Token);
        Assert.Equal(0, handle.CompletionTokens);

        var scored = handle.PromptLogprobs!;
        Assert.Equal(prompt.Length, scored.Count);
        Assert.Null(scored[0].Logprob);
        var v = _model.Config.VocabSize;
        var logits = new float[prompt.Length * v];
        using var reference = new BatchDecoder(_model, 1);
        reference.Prefill(reference.TryAllocate()!, prompt, allLogits: logits);
        for (var j = 1; j < prompt.Length; j++)
        {
            var row = logits.AsSpan((j - 1) * v, v).ToArray();
            double max = row.Max(), z = 0;
            foreach (var x in row) z += Math.Exp(x - max);
            var expected = row[prompt[j]] - max - Math.Log(z);
            Assert.Equal(prompt[j], scored[j].TokenId);
            Assert.InRange(Math.Abs(scored[j].Logprob!.Value - expected), 0, 1e-4);
            var best = Enumerable.Range(0, v).OrderByDescending(i => row[i]).ThenBy(i => i).Take(3).ToArray();
            Assert.Equal(best, scored[j].TopLogprobs!.Select(t => t.TokenId));
        }
    }
}
