using Microsoft.ML.OnnxRuntime;
using Serving.Checkpoints.RewardHeads;
using Serving.Inference.Engine;
using Serving.Inference.Graphs;

namespace Serving.Inference.Rewards;

/// <summary>
/// An Otter side network bound to a loaded model: one ONNX Runtime session per layer (<see cref="SideGraph"/>) on the
/// model's thread pool, reading the base layer inputs a decode step already computes. Immutable and shared; each
/// decoder keeps its own side K/V cache and stream buffers for it (<see cref="Engine.SideRuntime"/>).
/// </summary>
public sealed class OtterNetwork : IDisposable
{
    public OtterNetwork(OtterDefinition definition, DecoderModel model)
    {
        Definition = definition;
        var c = model.Config;
        var sessions = new InferenceSession[c.NumLayers];
        using var so = model.CreateSessionOptions();
        try
        {
            for (var l = 0; l < c.NumLayers; l++)
            {
                sessions[l] = new InferenceSession(SideGraph.Build(c, definition, definition.Layers[l], model.LayerInputNorms[l], l, model.MaxContext, model.Rotary), so);
            }
        }
        catch
        {
            foreach (var s in sessions) s?.Dispose();
            throw;
        }
        Layers = sessions;
    }

    public OtterDefinition Definition { get; }

    /// <summary>Side stream width.</summary>
    public int SideSize => Definition.SideSize;

    internal InferenceSession[] Layers { get; }

    public void Dispose()
    {
        foreach (var s in Layers) s.Dispose();
    }
}
