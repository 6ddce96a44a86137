using Serving.LoadGen.Metrics;
using Serving.LoadGen.Workload;

namespace Serving.LoadGen.Client;

/// <summary>Open loop (send at the trace's arrival times) or closed loop (fixed number of requests in flight).</summary>
public enum LoadMode
{
    /// <summary>Send each request at its arrival time, whatever is in flight.</summary>
    OpenLoop,
    /// <summary>Keep a fixed number of requests in flight; arrival times are ignored.</summary>
    ClosedLoop,
}

/// <summary>One run (one sweep point).</summary>
public sealed record RunPlan
{
    /// <summary>Requests in order; open-loop runs use their arrival times.</summary>
    public required IReadOnlyList<TraceRequest> Requests { get; init; }

    /// <summary>Open or closed loop.</summary>
    public LoadMode Mode { get; init; } = LoadMode.OpenLoop;

    /// <summary>Requests in flight in closed loop; an optional cap in open loop (0 = none).</summary>
    public int Concurrency { get; init; }

    /// <summary>No request is sent after this much time; in-flight ones still end by their own timeout.</summary>
    public TimeSpan Duration { get; init; } = TimeSpan.FromMinutes(10);
}

/// <summary>What a run produced.</summary>
/// <param name="Records">One record per request sent, in completion order.</param>
/// <param name="DurationSeconds">From the start of the run to the end of its last request.</param>
/// <param name="Interrupted">True when the caller cancelled (Ctrl+C) before the run ended.</param>
/// <param name="NotSent">Requests of the plan never sent (duration reached or interrupted).</param>
public sealed record RunOutcome(IReadOnlyList<RequestRecord> Records, double DurationSeconds, bool Interrupted, int NotSent);

/// <summary>Drives a <see cref="RunPlan"/> through an <see cref="IRequestSender"/>.</summary>
public sealed class LoadRunner(IRequestSender client, TimeProvider? time = null)
{
    private readonly TimeProvider _time = time ?? TimeProvider.System;

    /// <summary>Runs the plan; always returns what was measured, also when <paramref name="cancellationToken"/> fires.</summary>
    /// <param name="plan">What to send.</param>
    /// <param name="onCompleted">Called (from any thread) as each request ends.</param>
    /// <param name="cancellationToken">Stops sending and cuts off requests in flight (they are recorded as cancelled).</param>
    public async Task<RunOutcome> RunAsync(RunPlan plan, Action<RequestRecord>? onCompleted, CancellationToken cancellationToken)
    {
        long origin = _time.GetTimestamp();
        var records = new List<RequestRecord>(plan.Requests.Count);
        int sent = 0;

        async Task SendOneAsync(TraceRequest request)
        {
            Interlocked.Increment(ref sent);
            RequestRecord record = await client.SendAsync(request, origin, cancellationToken).ConfigureAwait(false);
            lock (records)
            {
                records.Add(record);
            }

            onCompleted?.Invoke(record);
        }

        bool DurationLeft() => _time.GetElapsedTime(origin) < plan.Duration && !cancellationToken.IsCancellationRequested;

        try
        {
            if (plan.Mode == LoadMode.ClosedLoop)
            {
                if (plan.Concurrency < 1)
                {
                    throw new ArgumentOutOfRangeException(nameof(plan), plan.Concurrency, "Closed loop needs concurrency >= 1.");
                }

                int next = -1;
                async Task WorkerAsync()
                {
                    int i;
                    while (DurationLeft() && (i = Interlocked.Increment(ref next)) < plan.Requests.Count)
                    {
                        await SendOneAsync(plan.Requests[i]).ConfigureAwait(false);
                    }
                }

                await Task.WhenAll(Enumerable.Range(0, plan.Concurrency).Select(_ => Task.Run(WorkerAsync, CancellationToken.None))).ConfigureAwait(false);
            }
            else
            {
                await RunOpenLoopAsync(plan, origin, SendOneAsync, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Ctrl+C while waiting for the next arrival: report what was measured.
        }

        RequestRecord[] done;
        lock (records)
        {
            done = records.ToArray();
        }

        double duration = done.Length == 0 ? _time.GetElapsedTime(origin).TotalSeconds : Math.Max(done.Max(r => r.EndSeconds), 0);
        return new RunOutcome(done, duration, cancellationToken.IsCancellationRequested, plan.Requests.Count - Volatile.Read(ref sent));
    }

    private async Task RunOpenLoopAsync(RunPlan plan, long origin, Func<TraceRequest, Task> send, CancellationToken ct)
    {
        using var gate = plan.Concurrency > 0 ? new SemaphoreSlim(plan.Concurrency) : null;
        var inFlight = new List<Task>(plan.Requests.Count);
        try
        {
            foreach (TraceRequest request in plan.Requests)
            {
                TimeSpan due = TimeSpan.FromSeconds(request.ArrivalSeconds);
                if (due >= plan.Duration)
                {
                    break;
                }

                TimeSpan wait = due - _time.GetElapsedTime(origin);
                if (wait > TimeSpan.Zero)
                {
                    await Task.Delay(wait, _time, ct).ConfigureAwait(false);
                }

                if (gate is not null)
                {
                    await gate.WaitAsync(ct).ConfigureAwait(false);
                }

                if (!(_time.GetElapsedTime(origin) < plan.Duration) || ct.IsCancellationRequested)
                {
                    gate?.Release();
                    break;
                }

                inFlight.Add(Task.Run(
                    async () =>
                    {
                        try
                        {
                            await send(request).ConfigureAwait(false);
                        }
                        finally
                        {
                            gate?.Release();
                        }
                    },
                    CancellationToken.None));
            }
        }
        finally
        {
            // Requests in flight end by themselves (timeout) or by ct; wait for them either way.
            await Task.WhenAll(inFlight).ConfigureAwait(false);
        }
    }
}
