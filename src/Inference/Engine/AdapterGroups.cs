namespace Serving.Inference.Engine;

/// <summary>
/// The distinct adapter slots of a step's rows, in order of first appearance, with how many rows each has; filled by
/// <see cref="Find"/> without allocating. Kernels read it to plan their adapter work.
/// </summary>
internal sealed class AdapterGroups
{
    private readonly int[] _groupOfSlot;

    public AdapterGroups(int slots)
    {
        _groupOfSlot = new int[slots];
        Array.Fill(_groupOfSlot, -1);
        Slots = new int[slots];
        Fill = new int[slots];
    }

    /// <summary>Slot of group g.</summary>
    public int[] Slots { get; }

    /// <summary>Rows of group g (kernels may reuse it as scratch once they have read it).</summary>
    public int[] Fill { get; }

    /// <summary>Distinct adapters in the step.</summary>
    public int Count { get; private set; }

    /// <summary>Rows with an adapter.</summary>
    public int AdaptedRows { get; private set; }

    /// <summary>Groups the first <paramref name="b"/> rows of <paramref name="active"/> by adapter slot.</summary>
    public void Find(IReadOnlyList<Sequence> active, int b)
    {
        int groups = 0, adapted = 0;
        for (var r = 0; r < b; r++)
        {
            var slot = active[r].AdapterSlot;
            if (slot < 0) continue;
            adapted++;
            if (_groupOfSlot[slot] < 0)
            {
                _groupOfSlot[slot] = groups;
                Slots[groups] = slot;
                Fill[groups] = 0;
                groups++;
            }
            Fill[_groupOfSlot[slot]]++;
        }
        for (var g = 0; g < groups; g++) _groupOfSlot[Slots[g]] = -1;
        Count = groups;
        AdaptedRows = adapted;
    }

    /// <summary>Temporarily maps each group's slot back to its group (for a kernel's second pass); undo with <see cref="ClearGroupOfSlot"/>.</summary>
    public void SetGroupOfSlot(int slot, int group) => _groupOfSlot[slot] = group;

    public int GroupOfSlot(int slot) => _groupOfSlot[slot];

    public void ClearGroupOfSlot()
    {
        for (var g = 0; g < Count; g++) _groupOfSlot[Slots[g]] = -1;
    }
}
