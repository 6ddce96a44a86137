using System.Collections.Concurrent;
using System.Threading.Channels;
using Microsoft.Extensions.Time.Testing;
using Serving.LoadGen.Client;
using Serving.LoadGen.Metrics;
using Serving.LoadGen.Workload;
using Xunit;

namespace Serving.LoadGen.Tests.Client;

/// <summary>Scheduling of the runner with a fake clock and a fake sender: exact, no real waiting.</summary>
public sealed class LoadRunnerTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    private sealed class FakeSender(TimeProvider time) : IRequestSender
    {
        private int _inFlight;

        public Channel<(TraceRequest Request, double At)> Sent { get; } = Channel.CreateUnbounded<(TraceRequest, double)>();

        public ConcurrentDictionary<int, TaskCompletionSource> Gates { get; } = new();

        public bool Hold { get; init; }

        public int MaxInFlight;

        public TaskCompletionSource Gate(int id) => Gates.GetOrAdd(id, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));

        public async Task<RequestRecord> SendAsync(TraceRequest request, long originTimestamp, CancellationToken cancellationToken)
        {
            double at = time.GetElapsedTime(originTimestamp).TotalSeconds;
            int now = Interlocked.Increment(ref _inFlight);
            int seen;
            while ((seen = Volatile.Read(ref MaxInFlight)) < now && Interlocked.CompareExchange(ref MaxInFlight, now, seen) != seen)
            {
            }

            Sent.Writer.TryWrite((request, at));
            try
            {
                if (Hold)
                {
                    await Gate(request.Id).Task.WaitAsync(cancellationToken);
                }

                return new RequestRecord { Id = request.Id, StartSeconds = at, EndSeconds = time.GetElapsedTime(originTimestamp).TotalSeconds, ChunkSeconds = [at], OutputTokens = 1 };
            }
            catch (OperationCanceledException)
            {
                return new RequestRecord { Id = request.Id, StartSeconds = at, EndSeconds = at, Error = ErrorKinds.Cancelled };
            }
            finally
            {
                Interlocked.Decrement(ref _inFlight);
            }
        }

        public async Task<(TraceRequest Request, double At)> NextAsync()
        {
            using var cts = new CancellationTokenSource(Bound);
            return await Sent.Reader.ReadAsync(cts.Token);
        }
    }

    private static TraceRequest[] Trace(params double[] arrivals) =>
        arrivals.Select((a, i) => new TraceRequest(i, a, null, 1, 1, "x")).ToArray();

    [Fact]
    public async Task OpenLoop_SendsEachRequestExactlyAtItsArrivalAndStopsAtDuration()
    {
        var time = new FakeTimeProvider();
        var sender = new FakeSender(time);
        var runner = new LoadRunner(sender, time);

        Task<RunOutcome> run = runner.RunAsync(new RunPlan { Requests = Trace(0, 0.3, 0.6, 5), Duration = TimeSpan.FromSeconds(1) }, null, CancellationToken.None);

        Assert.Equal((0, 0.0), Ids(await sender.NextAsync()));
        time.Advance(TimeSpan.FromMilliseconds(299));
        Assert.False(sender.Sent.Reader.TryRead(out _), "request 1 sent before its arrival time");
        time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.Equal((1, 0.3), Ids(await sender.NextAsync()));
        time.Advance(TimeSpan.FromMilliseconds(300));
        Assert.Equal((2, 0.6), Ids(await sender.NextAsync()));

        RunOutcome outcome = await run.WaitAsync(Bound);

        Assert.Equal(3, outcome.Records.Count);
        Assert.Equal(1, outcome.NotSent); // arrival 5 s is past the 1 s duration
        Assert.False(outcome.Interrupted);
    }

    [Fact]
    public async Task ClosedLoop_KeepsExactlyConcurrencyInFlight()
    {
        var sender = new FakeSender(TimeProvider.System) { Hold = true };
        var runner = new LoadRunner(sender);

        Task<RunOutcome> run = runner.RunAsync(new RunPlan { Requests = Trace(new double[10]), Mode = LoadMode.ClosedLoop, Concurrency = 3 }, null, CancellationToken.None);

        var first = new List<int>();
        for (int i = 0; i < 3; i++)
        {
            first.Add((await sender.NextAsync()).Request.Id);
        }

        Assert.Equal(3, sender.MaxInFlight);
        Assert.False(sender.Sent.Reader.TryRead(out _), "a fourth request was sent while three were in flight");
        foreach (int id in first)
        {
            sender.Gate(id).SetResult();
        }

        for (int i = 3; i < 10; i++)
        {
            sender.Gate((await sender.NextAsync()).Request.Id).SetResult();
        }

        RunOutcome outcome = await run.WaitAsync(Bound);

        Assert.Equal(10, outcome.Records.Count);
        Assert.Equal(3, sender.MaxInFlight);
        Assert.Equal(Enumerable.Range(0, 10), outcome.Records.Select(r => r.Id).Order());
    }

    [Fact]
    public async Task OpenLoop_MaxConcurrency_CapsRequestsInFlight()
    {
        var sender = new FakeSender(TimeProvider.System) { Hold = true };
        var runner = new LoadRunner(sender);

        Task<RunOutcome> run = runner.RunAsync(new RunPlan { Requests = Trace(new double[6]), Concurrency = 2 }, null, CancellationToken.None);

        var inFlight = new Queue<int>();
        inFlight.Enqueue((await sender.NextAsync()).Request.Id);
        inFlight.Enqueue((await sender.NextAsync()).Request.Id);
        Assert.False(sender.Sent.Reader.TryRead(out _), "a third request was sent past the cap of 2");
        for (int i = 2; i < 6; i++)
        {
            sender.Gate(inFlight.Dequeue()).SetResult();
            inFlight.Enqueue((await sender.NextAsync()).Request.Id);
        }

        while (inFlight.Count > 0)
        {
            sender.Gate(inFlight.Dequeue()).SetResult();
        }

        RunOutcome outcome = await run.WaitAsync(Bound);

        Assert.Equal(6, outcome.Records.Count);
        Assert.Equal(2, sender.MaxInFlight);
    }

    [Fact]
    public async Task Cancel_WhileWaitingForNextArrival_ReportsWhatWasMeasured()
    {
        var time = new FakeTimeProvider();
        var sender = new FakeSender(time);
        using var cts = new CancellationTokenSource();

        Task<RunOutcome> run = new LoadRunner(sender, time).RunAsync(new RunPlan { Requests = Trace(0, 10, 20) }, null, cts.Token);
        await sender.NextAsync();
        await cts.CancelAsync();
        RunOutcome outcome = await run.WaitAsync(Bound);

        Assert.True(outcome.Interrupted);
        Assert.Single(outcome.Records);
        Assert.Equal(2, outcome.NotSent);
    }

    private static (int, double) Ids((TraceRequest Request, double At) sent) => (sent.Request.Id, Math.Round(sent.At, 9));
}
