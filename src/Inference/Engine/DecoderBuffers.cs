using Microsoft.ML.OnnxRuntime;
using Serving.Checkpoints;
using Serving.Inference.KvCache;
using Serving.Inference.Runtime;

namespace Serving.Inference.Engine;

/// <summary>
/// The fixed native buffers one <see cref="BatchDecoder"/> binds its units to, allocated once: two hidden-state
/// buffers that the layers alternate between, positions, per-row sequence lengths, the total length, the logits and
/// the KV cache. Shared by the decoder, its step bindings and its adapter kernel.
/// <para>On a device (<see cref="Device"/>: CUDA, or the tests' emulation) the K/V cache, both hidden-state buffers, the
/// positions and the sequence lengths also live in device memory: sessions bind <see cref="Bound{T}"/> views of the
/// device copies, a step writes its embedding rows, positions and lengths on the host and sends them in one copier run
/// (<see cref="UploadDecode"/>, <see cref="UploadPrefill"/>), and code that reads a hidden state on the host (reward
/// heads, side networks, captures) first brings it back (<see cref="Download"/>). The total length stays on the host
/// (<c>GroupQueryAttention</c> takes it in CPU memory) and so do the logits (sampling reads them).</para>
/// </summary>
internal sealed class DecoderBuffers : IDisposable
{
    private readonly Dictionary<object, IDisposable> _twins = new(ReferenceEqualityComparer.Instance);
    private readonly CopyPlan?[] _decodeUploads = [];
    private readonly Dictionary<(object Buffer, long Count), CopyPlan> _downloads = [];

    public DecoderBuffers(DecoderModel model, int capacity)
    {
        Model = model;
        Config = model.Config;
        var c = Config;
        Device = DeviceMemory.For(model.Options);
        Kv = new KvCachePool(c.NumLayers, capacity, c.NumKvHeads, model.MaxContext, c.HeadDim, half: model.Options.Precision == ComputePrecision.Float16, device: Device);
        var rows = Math.Max(Math.Max(capacity, model.MaxContext), model.Options.MaxStepTokens);
        HiddenA = new NativeBuffer<float>((long)rows * c.HiddenSize);
        HiddenB = new NativeBuffer<float>((long)rows * c.HiddenSize);
        Positions = new NativeBuffer<long>(rows);
        SeqLens = new NativeBuffer<int>(capacity);
        Total = new NativeBuffer<int>(1);
        Logits = new NativeBuffer<float>((long)capacity * c.VocabSize);
        Rotary = c.Architecture == ModelArchitecture.Llama;
        MaxTokensPerStep = rows;
        if (Device is null) return;
        _twins[HiddenA] = Device.Allocate<float>(HiddenA.Length);
        _twins[HiddenB] = Device.Allocate<float>(HiddenB.Length);
        _twins[Positions] = Device.Allocate<long>(Positions.Length);
        _twins[SeqLens] = Device.Allocate<int>(SeqLens.Length);
        _decodeUploads = new CopyPlan?[capacity + 1];
    }

    /// <summary>Where the decoder's bound state lives when it is not the host buffers themselves (null on the CPU provider).</summary>
    public DeviceMemory? Device { get; }

    /// <summary>
    /// The view of <c>[offset, offset + Π shape)</c> of <paramref name="host"/> that sessions bind: its device copy when
    /// the buffer has one, else the host buffer. The caller owns it.
    /// </summary>
    public OrtValue Bound<T>(NativeBuffer<T> host, long offset, params long[] shape) where T : unmanaged =>
        _twins.TryGetValue(host, out var twin) ? ((DeviceBuffer<T>)twin).View(offset, shape) : host.View(offset, shape);

    /// <summary>Sends a decode step's host-written inputs (rows [0, <paramref name="batch"/>) of the embedding output, positions and lengths) to the device; no allocation once the batch size was seen.</summary>
    public void UploadDecode(int batch)
    {
        if (Device is null) return;
        var plan = _decodeUploads[batch] ??= new CopyPlan(Device, StepInputs(batch, batch, batch));
        Device.Run(plan);
    }

    /// <summary>Sends a prefill's host-written inputs (<paramref name="tokens"/> embedding rows and positions, one length) to the device.</summary>
    public void UploadPrefill(int tokens)
    {
        if (Device is null) return;
        using var plan = new CopyPlan(Device, StepInputs(tokens, tokens, 1));
        Device.Run(plan);
    }

    private List<(OrtValue, OrtValue)> StepInputs(int rows, int positions, int lengths)
    {
        var d = Config.HiddenSize;
        var pairs = new List<(OrtValue, OrtValue)>
        {
            (HiddenA.Bytes(0, (long)rows * d), Twin<float>(HiddenA).Bytes(0, (long)rows * d)),
            (SeqLens.Bytes(0, lengths), Twin<int>(SeqLens).Bytes(0, lengths)),
        };
        if (Rotary) pairs.Add((Positions.Bytes(0, positions), Twin<long>(Positions).Bytes(0, positions)));
        return pairs;
    }

    /// <summary>
    /// Makes the first <paramref name="count"/> values of hidden buffer <paramref name="host"/> on the host equal its
    /// device copy (before host code reads a block's input or output); nothing to do without a device. No allocation once
    /// the buffer and count were seen.
    /// </summary>
    public void Download(NativeBuffer<float> host, long count)
    {
        if (Device is null) return;
        var key = ((object)host, count);
        if (!_downloads.TryGetValue(key, out var plan))
        {
            plan = new CopyPlan(Device, [(Twin<float>(host).Bytes(0, count), host.Bytes(0, count))]);
            _downloads[key] = plan;
        }
        Device.Run(plan);
    }

    private DeviceBuffer<T> Twin<T>(NativeBuffer<T> host) where T : unmanaged => (DeviceBuffer<T>)_twins[host];

    /// <summary>Gives another step input written on the host (an adapter kernel's tables) a device copy that <see cref="Bound{T}"/> then views; nothing without a device.</summary>
    public void Mirror<T>(NativeBuffer<T> host) where T : unmanaged
    {
        if (Device is not null) _twins.Add(host, Device.Allocate<T>(host.Length));
    }

    /// <summary>The copy pair that sends the first <paramref name="count"/> values of mirrored <paramref name="host"/> to its device copy (for a <see cref="CopyPlan"/>).</summary>
    public (OrtValue From, OrtValue To) UploadPair<T>(NativeBuffer<T> host, long count) where T : unmanaged =>
        (host.Bytes(0, count), Twin<T>(host).Bytes(0, count));

    public void Dispose()
    {
        foreach (var p in _decodeUploads) p?.Dispose();
        foreach (var p in _downloads.Values) p.Dispose();
        foreach (var t in _twins.Values) t.Dispose();
        Kv.Dispose();
        Device?.Dispose();
    }

    public DecoderModel Model { get; }
    public ModelConfig Config { get; }
    public KvCachePool Kv { get; }
    public NativeBuffer<float> HiddenA { get; }
    public NativeBuffer<float> HiddenB { get; }
    public NativeBuffer<long> Positions { get; }
    public NativeBuffer<int> SeqLens { get; }
    public NativeBuffer<int> Total { get; }
    public NativeBuffer<float> Logits { get; }

    /// <summary>Rotary models take position ids as a block input.</summary>
    public bool Rotary { get; }

    /// <summary>Most tokens one step holds (a decode's rows or a prefill's prompt tokens).</summary>
    public int MaxTokensPerStep { get; }

    /// <summary>The buffer layer <paramref name="layer"/> reads (the embedding output for layer 0).</summary>
    public NativeBuffer<float> Input(int layer) => layer % 2 == 0 ? HiddenA : HiddenB;

    /// <summary>The buffer layer <paramref name="layer"/> writes.</summary>
    public NativeBuffer<float> Output(int layer) => layer % 2 == 0 ? HiddenB : HiddenA;
}
