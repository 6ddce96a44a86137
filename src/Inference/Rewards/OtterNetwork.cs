using Microsoft.ML.OnnxRuntime;
using Serving.Checkpoints.RewardHeads;
using Serving.Inference.Engine;
using Serving.Inference.Graphs;

namespace Serving.Inference.Rewards;

/// <summary>
/// An Otter side network bound to a loaded model, on the model's thread pool: one ONNX Runtime session per layer
/// (<see cref="SideGraph.BuildLayer"/>, run between the base blocks of a prefill) and one session of every layer at once
/// (<see cref="SideGraph.BuildStacked"/>, run once per decode step on the base layer inputs the step kept). The two
/// forms hold their own copies of the side weights (per layer, and stacked [L, …]); the side network is small by
/// design (the demo's: 0.6% of the base's parameters). Immutable and shared; each decoder keeps its own side K/V cache
/// and stream buffers for it (<see cref="Engine.SideRuntime"/>).
/// </summary>
public sealed class OtterNetwork : IDisposable
{
    public OtterNetwork(OtterDefinition definition, DecoderModel model)
    {
        Definition = definition;
        var c = model.Config;
        var sessions = new InferenceSession[definition.Layers.Count];
        using var so = model.CreateSessionOptions();
        OtterSideStepOp.Register(so);
        try
        {
            Stacked = new InferenceSession(SideGraph.BuildStacked(c, definition, model.LayerInputNorms, model.MaxContext, model.Rotary), so);
            for (var i = 0; i < sessions.Length; i++)
            {
                var norm = model.LayerInputNorms[definition.Layers[i].Layer];
                sessions[i] = new InferenceSession(SideGraph.BuildLayer(c, definition, norm, i, model.MaxContext, model.Rotary), so);
            }
        }
        catch
        {
            foreach (var s in sessions) s?.Dispose();
            Stacked?.Dispose();
            throw;
        }
        Layers = sessions;
    }

    public OtterDefinition Definition { get; }

    /// <summary>Side stream width.</summary>
    public int SideSize => Definition.SideSize;

    /// <summary>One session per side layer (prefill), in the order of <see cref="OtterDefinition.Layers"/>.</summary>
    internal InferenceSession[] Layers { get; }

    /// <summary>Every side layer as one batched computation (decode steps).</summary>
    internal InferenceSession Stacked { get; }

    public void Dispose()
    {
        foreach (var s in Layers) s.Dispose();
        Stacked.Dispose();
    }
}
