using Serving.Inference.Decoding;
using Serving.Inference.Engine;
using Serving.Inference.Runtime;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;
using Serving.Inference.Tokenization;
using Xunit;

namespace Serving.Inference.Tests.Decoding;

/// <summary>
/// The scheduler's guard against a strategy defect: a running request whose strategy releases every row without being
/// done can never be stepped again, so it is ended with an abort (and reported) instead of running forever.
/// </summary>
public sealed class StalledStrategyTests : IDisposable
{
    private readonly DecoderModel _model = DecoderModel.Load(Fixtures.TinyGpt2, new RuntimeOptions { MaxBatch = 4, MaxContext = 64 });

    public void Dispose() => _model.Dispose();

    /// <summary>Releases its row at the first logits and never says it is done.</summary>
    private sealed record ForgetfulSpec : DecodingSpec
    {
        public override string Method => "forgetful";

        public override int MaxRows(GenerationRequest request) => 1;

        public override IDecodingStrategy Create(DecodingSetup setup) => new Forgetful(setup);

        private sealed class Forgetful(DecodingSetup setup) : IDecodingStrategy
        {
            public bool IsDone { get; private set; }

            public ulong[] Seeds { get; } = [1];

            public void OnLogits(IDecodingContext context, DecodingRow row, ReadOnlySpan<float> logits) => context.Release(row);

            public void Abort()
            {
                setup.Handle.Write(new GenerationEvent(GenerationEventKind.Finished, 0, null, -1, 0f, null, FinishReason.Abort));
                IsDone = true;
            }
        }
    }

    private sealed class StallCounter : ISchedulerObserver
    {
        public int Stalled;
        public void OnRequestStarted(GenerationHandle request, TimeSpan queued) { }
        public void OnFirstToken(GenerationHandle request, TimeSpan timeToFirstToken) { }
        public void OnOutputToken(TimeSpan sincePrevious) { }
        public void OnPromptTokens(int count) { }
        public void OnRequestFinished(GenerationHandle request, FinishReason reason) { }
        public void OnStepFailed(Exception error) { }
        public void OnStrategyStalled(GenerationHandle request) => Stalled++;
    }

    [Fact]
    public void StrategyHoldingNoRow_IsEndedWithAnAbort_AndTheNextRequestRuns()
    {
        var observer = new StallCounter();
        var tokenizer = TokenizerLoader.Load(Fixtures.TinyGpt2, _model.Config.VocabSize);
        using var h = new SchedulerHarness(_model, tokenizer, rows: 2, observer);
        var stalled = h.Run(new GenerationRequest
        {
            PromptTokens = [5, 6, 7],
            Sampling = new SamplingParameters { MaxTokens = 4 },
            Decoding = new ForgetfulSpec(),
        });
        Assert.Equal(FinishReason.Abort, stalled.Finish().FinishReason);
        Assert.Equal(1, observer.Stalled);
        Assert.Equal(0, h.Decoder.ActiveCount);

        var plain = h.Run(new GenerationRequest { PromptTokens = [5, 6, 7], Sampling = new SamplingParameters { MaxTokens = 4, Temperature = 0, IgnoreEos = true } });
        Assert.Equal(4, plain.Handle.CompletionTokens);
        Assert.Equal(FinishReason.Length, plain.Finish().FinishReason);
        Assert.Equal(1, observer.Stalled);
    }
}
