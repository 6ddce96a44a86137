namespace Serving.Inference.Engine.Kernels;

/// <summary>
/// How a decoder adds per-row adapter updates to its blocks: the block variant a step runs, its bindings and the
/// per-step plan. Chosen once per decoder from <see cref="Runtime.RuntimeOptions.AdapterKernel"/> (segmented operator
/// on CPU, stock batched MatMuls otherwise); steps without adapters never reach it.
/// </summary>
internal interface IAdapterKernel : IDisposable
{
    /// <summary>Bindings for a prefill of <paramref name="tokens"/> tokens of the row in KV slot <paramref name="kvSlot"/>, all on adapter slot <paramref name="adapterSlot"/>; the caller disposes them.</summary>
    StepBindings BindPrefill(int kvSlot, int adapterSlot, int tokens);

    /// <summary>
    /// Bindings (head included) for a decode step of the first <paramref name="batch"/> rows of <paramref name="active"/>,
    /// whose adapters <paramref name="groups"/> found (at least one); cached per shape, owned by the kernel.
    /// </summary>
    StepBindings BindDecode(int batch, AdapterGroups groups, IReadOnlyList<Sequence> active, out AdapterStepCost cost);
}

/// <summary>What a decode step's adapters cost: bytes of A/B read, and grid entries (tokens plus padding) the batched GEMMs ran on.</summary>
internal readonly record struct AdapterStepCost(long Bytes, long GridEntries);
