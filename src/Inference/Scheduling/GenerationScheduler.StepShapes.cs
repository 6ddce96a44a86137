using Serving.Inference.Decoding;

namespace Serving.Inference.Scheduling;

// The two shapes an iteration's engine work can take (docs/scheduling.md). StepCore picks one per iteration; admission,
// fairness and handing logits out are shared.
//  - WholeSteps: each prompt chunk is its own prefill call before the step; one decode step then carries every row's
//    pending token.
//  - MixedSteps (SchedulerOptions.MixedSteps): decode tokens and prompt chunks ride in one packed pass under a token
//    budget, decode tokens first. Rows it cannot carry (an Otter side network, an exit policy, a scored prompt) are
//    prefilled the whole-step way. An iteration without prompt work is a mixed step of decode rows only: the packed
//    blocks' attention reads a row's heads interleaved, which measured faster than GroupQueryAttention's step.
public sealed partial class GenerationScheduler
{
    private abstract class StepShape(GenerationScheduler scheduler)
    {
        protected GenerationScheduler S { get; } = scheduler;

        /// <summary>Prompt tokens this iteration may prefill (called once, before any <see cref="AdvancePrefill"/>).</summary>
        public abstract int PromptBudget();

        /// <summary>Prefills, or plans for this iteration's step, up to <paramref name="budget"/> prompt tokens of a row; returns the tokens taken.</summary>
        public abstract int AdvancePrefill(ScheduledRequest job, DecodingRow row, int budget);

        /// <summary>Runs the iteration's step and hands each row's logits on.</summary>
        public abstract void Run();

        /// <summary>
        /// Hands a step's logits (one vocabulary-sized slice per entry of the scheduler's step rows) to where a decode step's
        /// or a prefill's would go. A prompt row's entry yields logits a strategy samples from
        /// only when it ends the prompt: its pending last token, or a chunk that reached the end.
        /// </summary>
        protected void HandOut(ReadOnlySpan<float> logits, int entries)
        {
            var stepRows = S._stepRows;
            var vocab = S._decoder.Model.Config.VocabSize;
            S._pool.DeferFrees = true;
            for (var e = 0; e < entries; e++)
            {
                var row = stepRows[e]!;
                var span = logits.Slice(e * vocab, vocab);
                if (row.Prefilling)
                {
                    if (row.LastPromptTokenPending)
                    {
                        if (IsScoredPromptRow(row)) row.Request!.PromptScores!.Observe(row.Length - 1, span);
                        row.LastPromptTokenPending = false;
                        if (row.PromptOffset == row.Prompt!.Length) S.PromptDone(row, span);
                    }
                    else if (row.PromptOffset == row.Prompt!.Length)
                    {
                        S.PromptDone(row, span);
                    }
                    continue;
                }
                if (row.Released) continue;
                row.Request!.Handle.AddLayers(row.Sequence.LastLayers, 1);
                S.Deliver(row, span);
            }
            Array.Clear(stepRows, 0, entries);
        }
    }

    private sealed class WholeSteps(GenerationScheduler scheduler) : StepShape(scheduler)
    {
        public override int PromptBudget() => S._options.MaxPrefillTokensPerStep;

        /// <summary>Prefills up to <paramref name="budget"/> prompt tokens of a row; the rest waits, one token fed by the decode step.</summary>
        public override int AdvancePrefill(ScheduledRequest job, DecodingRow row, int budget)
        {
            var prompt = row.Prompt!;
            var take = Math.Max(0, Math.Min(prompt.Length - row.PromptOffset, budget));
            var scored = IsScoredPromptRow(row);
            if (scored) take = Math.Min(take, ScoredChunk);
            if (take > 0)
            {
                var logits = scored ? S.PrefillScored(row, prompt, take) : S._decoder.Prefill(row.Sequence, prompt.AsSpan(row.PromptOffset, take));
                row.PromptOffset += take;
                S._observer.OnPromptTokens(take);
                if (row.PromptOffset == prompt.Length)
                {
                    S.PromptDone(row, logits);
                    return take;
                }
            }
            // Keep the row in the next decode step: it feeds the next prompt token (its logits matter only if it is the last).
            row.Sequence.PendingToken = prompt[row.PromptOffset++];
            row.LastPromptTokenPending = true;
            S._observer.OnPromptTokens(1);
            return take;
        }

        /// <summary>One decode step for every row.</summary>
        public override void Run()
        {
            var decoder = S._decoder;
            var stepRows = S._stepRows;
            var b = decoder.ActiveCount;
            if (b == 0) return;
            var active = decoder.Active;
            for (var r = 0; r < b; r++) stepRows[r] = S._pool.RowOf(active[r]);
            var logits = decoder.Decode();
            HandOut(logits, b);
            S.FinishIteration();
        }
    }

    private sealed class MixedSteps(GenerationScheduler scheduler, WholeSteps whole) : StepShape(scheduler)
    {
        private readonly DecodingRow?[] _plannedRows = new DecodingRow?[scheduler.Capacity];
        private readonly int[] _plannedTake = new int[scheduler.Capacity];
        private int _plannedCount;

        /// <summary>
        /// Decode rows go first (one token each), prompt chunks fill the step's budget
        /// (<see cref="SchedulerOptions.MaxTokensPerStep"/>) up to their cap (<see cref="SchedulerOptions.MaxPrefillTokensPerStep"/>);
        /// at least one, so prompts always progress.
        /// </summary>
        public override int PromptBudget()
        {
            _plannedCount = 0;
            var decoding = 0;
            var active = S._decoder.Active;
            for (var r = 0; r < active.Count; r++)
            {
                if (active[r].PendingToken >= 0) decoding++;
            }
            var room = S._options.MaxTokensPerStep - decoding; // the buffers hold it (checked when the scheduler was made)
            return Math.Max(1, Math.Min(S._options.MaxPrefillTokensPerStep, room));
        }

        /// <summary>Plans the row's next chunk into this iteration's step; a row without budget waits for the next one.</summary>
        public override int AdvancePrefill(ScheduledRequest job, DecodingRow row, int budget)
        {
            if (IsScoredPromptRow(row) || NeedsWholeSteps(row.Sequence)) return whole.AdvancePrefill(job, row, budget);
            var chunk = Math.Max(0, Math.Min(row.Prompt!.Length - row.PromptOffset, budget));
            if (chunk > 0)
            {
                _plannedRows[_plannedCount] = row;
                _plannedTake[_plannedCount++] = chunk;
            }
            return chunk;
        }

        /// <summary>
        /// Every row with a pending token (decode rows, and prompt rows feeding a single pending prompt token) plus the
        /// prompt chunks planned this iteration, in one pass; each entry's logits go where a decode step's or a prefill's would.
        /// With decode rows only this is the packed decode step, which took 3–8% less engine time than the ordinary one
        /// at ~30 rows (its attention reads a row's heads interleaved; docs/benchmarks.md, issue 21).
        /// </summary>
        public override void Run()
        {
            var decoder = S._decoder;
            var stepRows = S._stepRows;
            var active = decoder.Active;
            var b = active.Count;
            if (b == 0)
            {
                _plannedCount = 0;
                return;
            }
            decoder.BeginStep();
            var entries = 0;
            for (var r = 0; r < b; r++)
            {
                var seq = active[r];
                if (seq.PendingToken < 0 || NeedsWholeSteps(seq)) continue; // waiting for a chunk, or admitted this iteration on whole steps
                decoder.AddToStep(seq);
                stepRows[entries++] = S._pool.RowOf(seq);
            }
            for (var p = 0; p < _plannedCount; p++)
            {
                var row = _plannedRows[p]!;
                _plannedRows[p] = null;
                if (row.Released || !row.Sequence.IsActive || !row.Prefilling) continue;
                var take = _plannedTake[p];
                decoder.AddToStep(row.Sequence, row.Prompt.AsSpan(row.PromptOffset, take));
                row.PromptOffset += take;
                S._observer.OnPromptTokens(take);
                stepRows[entries++] = row;
            }
            _plannedCount = 0;
            if (entries == 0) return;
            var logits = decoder.RunStep();
            HandOut(logits, entries);
            S.FinishIteration();
        }
    }

    /// <summary>Rows that a mixed step cannot carry: their strategies decode them with whole steps only.</summary>
    private static bool NeedsWholeSteps(Engine.Sequence seq) => seq.RewardHead?.Side is not null || seq.Exit is not null;

    private bool AnyRowNeedsWholeSteps()
    {
        var active = _decoder.Active;
        for (var r = 0; r < active.Count; r++)
        {
            if (NeedsWholeSteps(active[r])) return true;
        }
        return false;
    }
}
