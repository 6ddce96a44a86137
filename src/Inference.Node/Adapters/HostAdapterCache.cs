namespace Serving.Inference.Node.Adapters;

/// <summary>
/// The host tier's decoded adapters: an LRU bounded by bytes. Pinned ids are never evicted, nor is the most recently
/// used entry (so one adapter larger than the budget still serves). Thread-safe; it never calls out while locked.
/// </summary>
internal sealed class HostAdapterCache(long budgetBytes)
{
    private readonly Lock _gate = new();
    private readonly Dictionary<string, LinkedListNode<HostAdapter>> _entries = new(StringComparer.Ordinal);
    private readonly LinkedList<HostAdapter> _lru = new(); // most recent first
    private readonly HashSet<string> _pinned = new(StringComparer.Ordinal);
    private long _bytes;

    /// <summary>The byte budget.</summary>
    public long BudgetBytes => budgetBytes;

    /// <summary>Bytes held now.</summary>
    public long Bytes => Interlocked.Read(ref _bytes);

    /// <summary>The entry under <paramref name="key"/>, marked most recently used; null when absent.</summary>
    public HostAdapter? Get(string key)
    {
        lock (_gate)
        {
            if (!_entries.TryGetValue(key, out var node)) return null;
            Touch(node);
            return node.Value;
        }
    }

    /// <summary>The entry under <paramref name="key"/> without marking it used; null when absent.</summary>
    public HostAdapter? Peek(string key)
    {
        lock (_gate) return _entries.TryGetValue(key, out var node) ? node.Value : null;
    }

    /// <summary>Adds an entry as most recently used (an existing key is only touched), then evicts down to the budget.</summary>
    public void Add(HostAdapter entry)
    {
        lock (_gate)
        {
            if (_entries.TryGetValue(entry.Key, out var existing))
            {
                Touch(existing);
                return;
            }
            _entries[entry.Key] = _lru.AddFirst(entry);
            Interlocked.Add(ref _bytes, entry.Bytes);
            Evict();
        }
    }

    /// <summary>Drops every entry <paramref name="stale"/> holds true for (pinned or not).</summary>
    public void RemoveWhere(Func<HostAdapter, bool> stale)
    {
        lock (_gate)
        {
            for (var node = _lru.First; node is not null;)
            {
                var next = node.Next;
                if (stale(node.Value)) Remove(node);
                node = next;
            }
        }
    }

    /// <summary>Keeps the entries of <paramref name="id"/> (<c>tenant/name</c>, any version) from eviction.</summary>
    public void Pin(string id)
    {
        lock (_gate) _pinned.Add(id);
    }

    /// <summary>Lets <paramref name="id"/> be evicted again (evicting down to the budget); false when it was not pinned.</summary>
    public bool Unpin(string id)
    {
        lock (_gate)
        {
            if (!_pinned.Remove(id)) return false;
            Evict();
            return true;
        }
    }

    /// <summary>True when <paramref name="id"/> is pinned.</summary>
    public bool IsPinned(string id)
    {
        lock (_gate) return _pinned.Contains(id);
    }

    /// <summary>Ids of the cached adapters (merges left out) and the pinned ids, each distinct and sorted.</summary>
    public (List<string> Ids, List<string> Pinned) Snapshot()
    {
        lock (_gate)
        {
            return (_lru.Where(e => e.Id is not null).Select(e => e.Id!).Distinct().Order(StringComparer.Ordinal).ToList(),
                [.. _pinned.Order(StringComparer.Ordinal)]);
        }
    }

    /// <summary>Drops least recently used, unpinned entries (never the most recent one) until the budget holds.</summary>
    private void Evict()
    {
        for (var node = _lru.Last; node is not null && node != _lru.First && _bytes > budgetBytes;)
        {
            var prev = node.Previous;
            if (node.Value.Id is not { } id || !_pinned.Contains(id)) Remove(node);
            node = prev;
        }
    }

    private void Remove(LinkedListNode<HostAdapter> node)
    {
        _lru.Remove(node);
        _entries.Remove(node.Value.Key);
        Interlocked.Add(ref _bytes, -node.Value.Bytes);
    }

    private void Touch(LinkedListNode<HostAdapter> node)
    {
        if (node == _lru.First) return;
        _lru.Remove(node);
        _lru.AddFirst(node);
    }
}
