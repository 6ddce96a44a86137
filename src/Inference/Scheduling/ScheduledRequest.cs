using Serving.Inference.Decoding;

namespace Serving.Inference.Scheduling;

/// <summary>
/// A request inside the scheduler: its handle, its decoding strategy, the KV rows it holds and the bookkeeping of
/// admission. It is also the strategy's <see cref="IDecodingContext"/>: forks, feeds and releases go through it, within
/// the rows its spec reserved.
/// </summary>
internal sealed class ScheduledRequest : IDecodingContext
{
    private readonly RowPool _pool;

    public ScheduledRequest(GenerationHandle handle, IDecodingStrategy strategy, int maxRows, RowPool pool)
    {
        Handle = handle;
        Strategy = strategy;
        MaxRows = maxRows;
        _pool = pool;
        if (handle.Request.PromptLogprobs is int top) PromptScores = new Output.PromptLogprobs(handle.Request.PromptTokens, top);
    }

    /// <summary>The prompt's logprobs being collected (null unless the request scores its prompt).</summary>
    public Output.PromptLogprobs? PromptScores { get; }

    public GenerationHandle Handle { get; }

    public IDecodingStrategy Strategy { get; }

    /// <summary>KV rows reserved for the request at admission (its spec's <see cref="DecodingSpec.MaxRows"/>).</summary>
    public int MaxRows { get; }

    /// <summary>Rows holding a KV row now (released ones until the scheduler frees them).</summary>
    public List<DecodingRow> Rows { get; } = [];

    /// <summary>The request's tenant ("" when none was given).</summary>
    public string Tenant => Handle.Request.Tenant ?? string.Empty;

    /// <summary>The queue policy's service counter while the request runs.</summary>
    public TenantUsage? Usage { get; set; }

    /// <summary>The iteration in which this waiting request was first passed over for want of an adapter slot (-1: never).</summary>
    public long BlockedSince { get; set; } = -1;

    /// <summary>Whether any row of the request had logits in the current iteration (the strategy gets <see cref="IDecodingStrategy.OnStepEnd"/>).</summary>
    public bool Touched { get; set; }

    /// <summary>Whether any row is still prefilling its prompt.</summary>
    public bool Prefilling
    {
        get
        {
            foreach (var row in Rows)
            {
                if (row.Prefilling) return true;
            }
            return false;
        }
    }

    public int MaxContext => _pool.MaxContext;

    public DecodingRow Fork(DecodingRow parent)
    {
        if (!Rows.Contains(parent) || !parent.IsActive) throw new InvalidOperationException("the parent row is not an active row of this request");
        if (Rows.Count >= MaxRows) throw new InvalidOperationException($"the request holds {Rows.Count} rows, all that its decoding method reserved");
        var child = _pool.Fork(parent);
        Rows.Add(child);
        return child;
    }

    public DecodingRow Start(int[] prompt)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        if (prompt.Length == 0 || prompt.Length >= MaxContext) throw new ArgumentException($"a row's prompt must hold 1 to {MaxContext - 1} tokens, got {prompt.Length}", nameof(prompt));
        if (Rows.Count >= MaxRows) throw new InvalidOperationException($"the request holds {Rows.Count} rows, all that its decoding method reserved");
        var row = _pool.Start(this, prompt, Rows.Count > 0 ? Rows[0].Sequence.AdapterSlot : -1);
        Rows.Add(row);
        return row;
    }

    public void Feed(DecodingRow row, int token) => row.Sequence.PendingToken = token;

    public void SetExit(DecodingRow row, EarlyExit.ExitPolicy? policy) => _pool.Decoder.SetExitPolicy(row.Sequence, policy);

    public void CopyLastHidden(DecodingRow row, Span<float> destination) => _pool.Decoder.CopyLastHidden(row.Sequence, destination);

    public ReadOnlySpan<float> Verify(DecodingRow row, ReadOnlySpan<float> hidden, int fromLayer, int tokens) =>
        _pool.Decoder.Verify(row.Sequence, hidden, fromLayer, tokens);

    public void Truncate(DecodingRow row, int length) => _pool.Decoder.Truncate(row.Sequence, length);

    public void Release(DecodingRow row)
    {
        if (row.Released) return;
        row.Released = true;
        row.Sequence.PendingToken = -1;
        if (!_pool.DeferFrees) Free(row);
    }

    /// <summary>Frees a released row's KV row (the scheduler calls this once a decode step's logits are all handed out).</summary>
    public void Free(DecodingRow row)
    {
        _pool.Free(row);
        Rows.Remove(row);
    }
}
