using Serving.Inference.Engine;
using Serving.Inference.Scheduling;
using Serving.Inference.Tokenization;
using Xunit;

namespace Serving.Inference.Tests.Decoding;

/// <summary>A scheduler driven one iteration at a time (no thread), and the events of a request collected per choice.</summary>
internal sealed class SchedulerHarness : IDisposable
{
    public SchedulerHarness(DecoderModel model, ITokenizer tokenizer, int rows = 8, ISchedulerObserver? observer = null)
    {
        Decoder = new BatchDecoder(model, rows);
        Scheduler = new GenerationScheduler(Decoder, tokenizer, observer: observer);
    }

    public BatchDecoder Decoder { get; }

    public GenerationScheduler Scheduler { get; }

    /// <summary>Runs one request to completion alone.</summary>
    public Result Run(GenerationRequest request) => RunAll([request])[0];

    /// <summary>Submits every request, then steps until all completed.</summary>
    public List<Result> RunAll(IReadOnlyList<GenerationRequest> requests)
    {
        var handles = requests.Select(r =>
        {
            Assert.Equal(SubmitStatus.Accepted, Scheduler.Submit(r, out var h));
            return h!;
        }).ToList();
        var events = handles.Select(_ => new List<GenerationEvent>()).ToList();
        for (var i = 0; i < 20_000 && handles.Any(h => !h.Events.Completion.IsCompleted); i++)
        {
            Scheduler.Step();
            for (var k = 0; k < handles.Count; k++)
            {
                while (handles[k].Events.TryRead(out var e)) events[k].Add(e);
            }
        }
        Assert.All(handles, h => Assert.True(h.Events.Completion.IsCompleted, "a request did not complete"));
        return handles.Select((h, k) => new Result(h, events[k])).ToList();
    }

    public void Dispose()
    {
        Scheduler.Dispose();
        Decoder.Dispose();
    }

    public sealed record Result(GenerationHandle Handle, List<GenerationEvent> Events)
    {
        public List<int> Tokens(int choice = 0) =>
            Events.Where(e => e.Kind == GenerationEventKind.Token && e.Choice == choice && e.TokenId >= 0).Select(e => e.TokenId).ToList();

        public string Text(int choice = 0) => string.Concat(Events.Where(e => e.Kind == GenerationEventKind.Token && e.Choice == choice).Select(e => e.Text));

        public GenerationEvent Finish(int choice = 0) => Events.Single(e => e.Kind == GenerationEventKind.Finished && e.Choice == choice);

        public int Choices => Events.Where(e => e.Kind == GenerationEventKind.Finished).Select(e => e.Choice).Distinct().Count();
    }
}
