using System.Diagnostics;
using Serving.Inference.Adapters;

namespace Serving.Inference.Scheduling;

/// <summary>
/// Which adapter sits in which device slot, and how many rows use each: the LRU tier between the host cache and the
/// engine's <see cref="AdapterSlotTable"/>. A slot is reused only when no row uses it (empty slots first, then least
/// recently admitted); <see cref="Activate"/> copies an adapter in (hot swap). Scheduler thread only, except the
/// published <see cref="Resident"/> snapshot.
/// </summary>
internal sealed class AdapterSlotResidency
{
    private readonly AdapterSlotTable? _table;
    private readonly ISchedulerObserver _observer;
    private readonly string?[] _key;
    private readonly int[] _rows;       // sequences using the slot
    private readonly long[] _lastUse;   // step of last admission
    private readonly Dictionary<string, int> _slotOf = [];
    private volatile string[] _resident = [];

    public AdapterSlotResidency(AdapterSlotTable? table, ISchedulerObserver observer)
    {
        _table = table;
        _observer = observer;
        var slots = table?.Count ?? 0;
        _key = new string?[slots];
        _rows = new int[slots];
        _lastUse = new long[slots];
    }

    /// <summary>Device slots (0 when the model serves the base only).</summary>
    public int Count => _key.Length;

    /// <summary>Keys of the adapters in slots (resident, whether or not rows use them now).</summary>
    public IReadOnlyList<string> Resident => _resident;

    /// <summary>
    /// Finds the slot for <paramref name="adapter"/>: the one already holding it, else one no row uses (empty first, then
    /// least recently used), which the caller must then fill with <see cref="Activate"/> (<paramref name="copy"/>).
    /// False when every slot is busy.
    /// </summary>
    public bool TryAcquire(AdapterRef adapter, out int slot, out bool copy)
    {
        copy = false;
        if (_slotOf.TryGetValue(adapter.Key, out slot))
        {
            _observer.OnAdapterSlotHit(adapter.Key);
            return true;
        }
        var victim = -1;
        for (var s = 0; s < _key.Length; s++)
        {
            if (_rows[s] > 0) continue;
            if (_key[s] is null)
            {
                victim = s;
                break;
            }
            if (victim < 0 || _lastUse[s] < _lastUse[victim]) victim = s;
        }
        slot = victim;
        copy = victim >= 0;
        return victim >= 0;
    }

    /// <summary>Copies <paramref name="adapter"/> into <paramref name="slot"/> (chosen by <see cref="TryAcquire"/>); on failure the slot is left empty.</summary>
    public void Activate(AdapterRef adapter, int slot)
    {
        var started = Stopwatch.GetTimestamp();
        var evicted = _key[slot];
        if (evicted is not null) _slotOf.Remove(evicted);
        _key[slot] = null;
        _table!.Write(slot, adapter.Factors);
        _key[slot] = adapter.Key;
        _slotOf[adapter.Key] = slot;
        _resident = Array.FindAll(_key, k => k is not null)!;
        _observer.OnAdapterActivated(adapter.Key, slot, evicted, Stopwatch.GetElapsedTime(started));
    }

    /// <summary>A row starts using <paramref name="slot"/> (admission, at iteration <paramref name="step"/>).</summary>
    public void Admit(int slot, long step)
    {
        _rows[slot]++;
        _lastUse[slot] = step;
    }

    /// <summary>A forked row uses its parent's slot too.</summary>
    public void Retain(int slot) => _rows[slot]++;

    /// <summary>A row using <paramref name="slot"/> was freed.</summary>
    public void Release(int slot) => _rows[slot]--;
}
