namespace Serving.Inference.Scheduling;

/// <summary>A consistent view of the scheduler, published after every iteration.</summary>
public sealed record SchedulerStatus
{
    /// <summary>Requests waiting for KV slots.</summary>
    public int Waiting { get; init; }

    /// <summary>Requests admitted (prefilling or decoding).</summary>
    public int RunningRequests { get; init; }

    /// <summary>Rows (sequences) holding a KV slot.</summary>
    public int RunningRows { get; init; }

    /// <summary>KV slots (most rows at once).</summary>
    public int KvSlots { get; init; }

    /// <summary>Tokens cached over all rows.</summary>
    public long KvTokens { get; init; }

    /// <summary>Tokens the cache holds when every slot is full (slots × max context).</summary>
    public long KvTokenCapacity { get; init; }

    /// <summary>Fraction of KV slots in use, in [0, 1] (the cache is allocated per slot).</summary>
    public double KvUsage => KvSlots == 0 ? 0 : (double)RunningRows / KvSlots;

    /// <summary>False while draining or stopped.</summary>
    public bool Accepting { get; init; }

    /// <summary>Iterations run since start.</summary>
    public long Steps { get; init; }

    /// <summary>Adapter slots (0 when the model serves the base only).</summary>
    public int AdapterSlots { get; init; }

    /// <summary>Keys of the adapters in device slots (resident, whether or not rows use them now).</summary>
    public IReadOnlyList<string> DeviceAdapters { get; init; } = [];

    /// <summary>Prompt tokens of admitted requests (their first rows), since start.</summary>
    public long PromptTokens { get; init; }

    /// <summary>Of <see cref="PromptTokens"/>, those whose K/V were copied from a running request (prefix reuse).</summary>
    public long PrefixTokensReused { get; init; }

    /// <summary>Requests waiting because every adapter slot is busy with other adapters.</summary>
    public int WaitingForAdapterSlot { get; init; }

    /// <summary>The engine's step counters since start (decode steps and rows, mixed steps, prefills, their time).</summary>
    public Engine.EngineCounters Engine { get; init; }
}
