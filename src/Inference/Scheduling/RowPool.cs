using Serving.Inference.Decoding;
using Serving.Inference.Engine;

namespace Serving.Inference.Scheduling;

/// <summary>
/// The scheduler's decoder rows as <see cref="DecodingRow"/>s: allocation at admission, forks, frees, and which row a
/// decode step's slot belongs to. While a decode step's logits are being handed out (<see cref="DeferFrees"/>), freeing
/// waits: releasing a decoder row moves the last row into its slot, which would reorder the step's logits.
/// </summary>
internal sealed class RowPool(BatchDecoder decoder, AdapterSlotResidency slots)
{
    private readonly Dictionary<Sequence, DecodingRow> _rows = [];

    public int MaxContext => decoder.Model.MaxContext;

    /// <summary>The decoder (strategies' engine operations go through <see cref="ScheduledRequest"/>).</summary>
    public BatchDecoder Decoder => decoder;

    /// <summary>True while a decode step's logits are being handed to strategies.</summary>
    public bool DeferFrees { get; set; }

    /// <summary>A new row for <paramref name="request"/>'s prompt, on adapter slot <paramref name="adapterSlot"/> (-1: base), admitted at iteration <paramref name="step"/>.</summary>
    public DecodingRow Allocate(ScheduledRequest request, int adapterSlot, long step)
    {
        var seq = decoder.TryAllocate() ?? throw new InvalidOperationException("no free KV slot although one was counted");
        if (adapterSlot >= 0)
        {
            decoder.SetAdapter(seq, adapterSlot);
            slots.Admit(adapterSlot, step);
        }
        if (request.Handle.Request.RewardHead is { } head) decoder.SetRewardHead(seq, head);
        if (request.Handle.Request.EarlyExit is { } exit) decoder.SetExitPolicy(seq, exit);
        var row = new DecodingRow(seq) { Prompt = request.Handle.Request.PromptTokens, CachedPrompt = request.Handle.Request.PromptTokens, Request = request };
        _rows[seq] = row;
        return row;
    }

    /// <summary>A further row of a running request, for another prompt, on the request's adapter slot (already held).</summary>
    public DecodingRow Start(ScheduledRequest request, int[] prompt, int adapterSlot)
    {
        var seq = decoder.TryAllocate() ?? throw new InvalidOperationException("no free KV slot for a reserved row");
        if (adapterSlot >= 0)
        {
            decoder.SetAdapter(seq, adapterSlot);
            slots.Retain(adapterSlot);
        }
        if (request.Handle.Request.RewardHead is { } head) decoder.SetRewardHead(seq, head);
        // Every live row takes part in the next decode step: it feeds the prompt's first token there, and the
        // scheduler's prefill phase takes the rest from the next iteration on.
        var row = new DecodingRow(seq) { Prompt = prompt, CachedPrompt = prompt, Request = request, PromptOffset = 1, LastPromptTokenPending = true };
        seq.PendingToken = prompt[0];
        _rows[seq] = row;
        return row;
    }

    public DecodingRow Fork(DecodingRow parent)
    {
        var seq = decoder.TryFork(parent.Sequence) ?? throw new InvalidOperationException("no free KV slot for a reserved fork");
        if (seq.AdapterSlot >= 0) slots.Retain(seq.AdapterSlot);
        var row = new DecodingRow(seq) { Tag = parent.Tag, Request = parent.Request, CachedPrompt = parent.CachedPrompt };
        _rows[seq] = row;
        return row;
    }

    public void Free(DecodingRow row)
    {
        var seq = row.Sequence;
        row.Released = true;
        if (!seq.IsActive) return;
        if (seq.AdapterSlot >= 0) slots.Release(seq.AdapterSlot);
        _rows.Remove(seq);
        decoder.Release(seq);
    }

    /// <summary>The row of an active sequence.</summary>
    public DecodingRow RowOf(Sequence seq) => _rows[seq];
}
