using Serving.Inference.Decoding;
using Serving.Inference.Sampling;

namespace Serving.Inference.Scheduling;

// One iteration of the scheduler: aborts, prefill and admission, the step (GenerationScheduler.StepShapes.cs), handing
// logits to strategies.
public sealed partial class GenerationScheduler
{
    private void StepCore()
    {
        EndExpired(_time.GetUtcNow());

        // Mixed steps when the decoder has them and no running row needs whole steps (an Otter side network, early exit).
        var shape = _mixedSteps is not null && _decoder.SupportsMixedSteps && !AnyRowNeedsWholeSteps() ? (StepShape)_mixedSteps : _wholeSteps;

        // Prefill: first the prompts already being prefilled, then newcomers while rows and budget allow.
        var budget = shape.PromptBudget();
        _pool.DeferFrees = true;
        for (var i = 0; i < _running.Count; i++)
        {
            var job = _running[i];
            for (var j = 0; j < job.Rows.Count; j++)
            {
                var row = job.Rows[j];
                if (row.Prefilling && !row.LastPromptTokenPending) budget -= shape.AdvancePrefill(job, row, budget);
            }
        }
        Admit(shape, ref budget);
        FinishIteration();
        shape.Run();
    }

    /// <summary>Cancelled, expired (or, when stopping, all) requests leave before the decode step.</summary>
    private void EndExpired(DateTimeOffset now)
    {
        for (var i = _running.Count - 1; i >= 0; i--)
        {
            var job = _running[i];
            if (_abortAll || job.Handle.IsCancellationRequested || job.Handle.Request.Deadline <= now)
            {
                _running.RemoveAt(i);
                AbortJob(job);
            }
        }
        lock (_gate)
        {
            for (var i = _waiting.Count - 1; i >= 0; i--)
            {
                var job = _waiting[i];
                if (_abortAll || job.Handle.IsCancellationRequested || job.Handle.Request.Deadline <= now)
                {
                    _waiting.RemoveAt(i);
                    _expired.Add(job);
                }
            }
        }
        foreach (var job in _expired) AbortJob(job);
        _expired.Clear();
    }

    /// <summary>
    /// Admits waiting requests in the queue policy's order while the budget lasts and the next one's rows fit. A request
    /// whose adapter finds no free slot is skipped (later requests may go ahead) until it has waited
    /// <see cref="SchedulerOptions.AdapterFairnessSteps"/>, after which nothing may take or hold a slot ahead of it:
    /// slots drain as their rows finish, and it gets the next one.
    /// </summary>
    private void Admit(StepShape shape, ref int budget)
    {
        var blockedOnSlots = 0;
        var scan = 0;
        lock (_gate) _queue.Order(_waiting);
        while (budget > 0)
        {
            ScheduledRequest? next = null;
            var slot = -1;
            var copy = false;
            lock (_gate)
            {
                while (scan < _waiting.Count)
                {
                    var candidate = _waiting[scan];
                    if (FreeRows() < candidate.MaxRows) break;
                    if (TryAcquireSlot(candidate, starving: blockedOnSlots > 0 && AnyStarving(scan), out slot, out copy))
                    {
                        next = candidate;
                        _waiting.RemoveAt(scan);
                        break;
                    }
                    if (candidate.BlockedSince < 0) candidate.BlockedSince = Interlocked.Read(ref _steps);
                    blockedOnSlots++;
                    scan++;
                }
            }
            if (next is null) break;
            if (copy)
            {
                // The copy happens outside the queue lock, so submitters never wait for it.
                try
                {
                    _slots.Activate(next.Handle.Request.Adapter!, slot);
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    // The slot is left marked empty; the request ends (abort) instead of vanishing from the queue.
                    _observer.OnStepFailed(e);
                    AbortJob(next);
                    continue;
                }
            }
            _queue.OnAdmitted(next);
            var row = _pool.Allocate(next, slot, Interlocked.Read(ref _steps));
            next.Rows.Add(row);
            _running.Add(next);
            next.Handle.Seeds = next.Strategy.Seeds;
            var admitted = _time.GetUtcNow();
            next.Handle.AdmittedAt = admitted;
            _observer.OnRequestStarted(next.Handle, admitted - next.Handle.SubmittedAt);
            Interlocked.Add(ref _promptTokens, row.Prompt!.Length);
            if (_options.PrefixReuse) ReusePrefix(next, row);
            budget -= shape.AdvancePrefill(next, row, budget);
        }
        _statusWaitingForSlot = blockedOnSlots;
    }

    /// <summary>KV rows neither held nor reserved by a running request.</summary>
    private int FreeRows()
    {
        var free = Capacity - _decoder.ActiveCount;
        foreach (var job in _running) free -= job.MaxRows - job.Rows.Count;
        return free;
    }

    /// <summary>Whether a request before <paramref name="end"/> in the queue has waited too long for an adapter slot (under the gate).</summary>
    private bool AnyStarving(int end)
    {
        for (var i = 0; i < end; i++)
        {
            var job = _waiting[i];
            if (job.BlockedSince >= 0 && Interlocked.Read(ref _steps) - job.BlockedSince >= _options.AdapterFairnessSteps) return true;
        }
        return false;
    }

    /// <summary>The slot for a request's adapter (-1 without one); with <paramref name="starving"/> only adapter-free requests pass, so busy slots drain.</summary>
    private bool TryAcquireSlot(ScheduledRequest job, bool starving, out int slot, out bool copy)
    {
        slot = -1;
        copy = false;
        if (job.Handle.Request.Adapter is not { } adapter) return true;
        return !starving && _slots.TryAcquire(adapter, out slot, out copy);
    }

    /// <summary>Prompt tokens per prefill chunk of a request that scores its prompt (every position's logits are kept: [chunk, V]).</summary>
    private const int ScoredChunk = 32;

    private float[] _scoredLogits = [];

    private static bool IsScoredPromptRow(DecodingRow row) => row.Request!.PromptScores is not null && ReferenceEquals(row.Request.Rows[0], row);

    /// <summary>Prefills a chunk keeping every position's logits, which score the prompt tokens after them; returns the last position's logits.</summary>
    private ReadOnlySpan<float> PrefillScored(DecodingRow row, int[] prompt, int take)
    {
        var vocab = _decoder.Model.Config.VocabSize;
        if (_scoredLogits.Length < ScoredChunk * vocab) _scoredLogits = new float[ScoredChunk * vocab];
        var first = row.Sequence.Length;
        var logits = _decoder.Prefill(row.Sequence, prompt.AsSpan(row.PromptOffset, take), allLogits: _scoredLogits);
        for (var i = 0; i < take; i++) row.Request!.PromptScores!.Observe(first + i, _scoredLogits.AsSpan(i * vocab, vocab));
        return logits;
    }

    /// <summary>A row's prompt is in the cache: its logits go to the strategy (the request's first token when it is the request's first row).</summary>
    private void PromptDone(DecodingRow row, ReadOnlySpan<float> logits)
    {
        row.Prompt = null;
        var job = row.Request!;
        if (ReferenceEquals(job.Rows[0], row))
        {
            if (job.PromptScores is { } scores) job.Handle.PromptLogprobs = scores.Tokens;
            var first = _time.GetUtcNow();
            job.Handle.FirstTokenAt = first;
            _observer.OnFirstToken(job.Handle, first - job.Handle.SubmittedAt);
        }
        Deliver(row, logits);
    }

    private void Deliver(DecodingRow row, ReadOnlySpan<float> logits)
    {
        var job = row.Request!;
        if (!job.Touched)
        {
            job.Touched = true;
            _touched.Add(job);
        }
        var before = job.Handle.GeneratedTokens;
        job.Strategy.OnLogits(job, row, logits);
        _queue.OnServed(job, job.Handle.GeneratedTokens - before);
    }

    /// <summary>
    /// After a batch of logits was handed out: frees released rows, lets each touched request's strategy finish its step
    /// (its frees are immediate now), and completes requests that are done.
    /// </summary>
    private void FinishIteration()
    {
        _pool.DeferFrees = false;
        foreach (var job in _running)
        {
            for (var i = job.Rows.Count - 1; i >= 0; i--)
            {
                if (job.Rows[i].Released) job.Free(job.Rows[i]);
            }
        }
        foreach (var job in _touched)
        {
            job.Touched = false;
            var before = job.Handle.GeneratedTokens;
            job.Strategy.OnStepEnd(job);
            _queue.OnServed(job, job.Handle.GeneratedTokens - before);
        }
        _touched.Clear();
        for (var i = _running.Count - 1; i >= 0; i--)
        {
            var job = _running[i];
            if (!job.Strategy.IsDone)
            {
                if (job.Rows.Count > 0) continue;
                // A strategy that holds no row is never stepped again: it cannot finish. End it (the client sees an
                // abort) rather than keep a request running that no step will ever serve.
                _observer.OnStrategyStalled(job.Handle);
                job.Strategy.Abort();
            }
            _running.RemoveAt(i);
            CompleteJob(job);
        }
    }

    private void CompleteJob(ScheduledRequest job)
    {
        _queue.OnCompleted(job, HasWaiting(job.Tenant));
        for (var i = job.Rows.Count - 1; i >= 0; i--) job.Free(job.Rows[i]);
        job.Handle.Write(new GenerationEvent(GenerationEventKind.Done, 0, null, -1, 0f, null, null));
        job.Handle.FinishedAt = _time.GetUtcNow();
        job.Handle.Complete();
        _observer.OnRequestFinished(job.Handle, job.Handle.FirstChoiceFinish ?? FinishReason.Abort);
    }

    /// <summary>Ends a waiting or running request now: what the client sees finishes with an abort, rows are freed.</summary>
    private void AbortJob(ScheduledRequest job)
    {
        job.Strategy.Abort();
        CompleteJob(job);
    }

    private bool HasWaiting(string tenant)
    {
        lock (_gate)
        {
            foreach (var job in _waiting)
            {
                if (string.Equals(job.Tenant, tenant, StringComparison.Ordinal)) return true;
            }
            return false;
        }
    }

    /// <summary>
    /// Prefix reuse at admission: the running request on the same adapter whose first row has cached the longest common
    /// prefix of this prompt (at least <see cref="SchedulerOptions.MinSharedPrefixTokens"/>, never the last prompt token,
    /// whose logits must be computed) lends its K/V; the new row's prefill starts after it.
    /// </summary>
    private void ReusePrefix(ScheduledRequest job, DecodingRow row)
    {
        var prompt = row.Prompt!;
        var seq = row.Sequence;
        if (job.PromptScores is not null || seq.RewardHead is not null || seq.Exit is not null) return;
        DecodingRow? best = null;
        var bestLength = _options.MinSharedPrefixTokens - 1;
        foreach (var other in _running)
        {
            if (ReferenceEquals(other, job)) continue;
            foreach (var source in other.Rows)
            {
                var cached = source.Sequence;
                if (!source.IsActive || source.CachedPrompt is not { } theirs || cached.AdapterSlot != seq.AdapterSlot || cached.RewardHead is not null || cached.Exit is not null) continue;
                // The source's cache holds its prompt up to what it has prefilled (then generated tokens).
                var limit = Math.Min(Math.Min(theirs.Length, cached.Length), prompt.Length - 1);
                if (limit <= bestLength) continue;
                var common = prompt.AsSpan(0, limit).CommonPrefixLength(theirs.AsSpan(0, limit));
                if (common > bestLength)
                {
                    best = source;
                    bestLength = common;
                }
            }
        }
        if (best is null) return;
        _decoder.SharePrefix(best.Sequence, seq, bestLength);
        row.PromptOffset = bestLength;
        Interlocked.Add(ref _prefixTokensReused, bestLength);
    }
}
