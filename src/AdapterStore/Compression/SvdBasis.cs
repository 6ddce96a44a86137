using Serving.AdapterStore.Peft;

namespace Serving.AdapterStore.Compression;

/// <summary>
/// Re-factors a LoRA payload into balanced SVD factors per module: <c>ΔW = s·B·A = U·Σ·Vᵀ</c> becomes
/// <c>B' = U·√Σ</c> [out, r'] and <c>A' = √Σ·Vᵀ</c> [r', in] with scale 1, keeping the leading r' components that hold
/// <c>energy</c> of ‖ΔW‖² (all non-zero ones at 1). The result is again a payload (same tensor names, manifest ranks
/// and scales updated); a module left with no component is dropped from it, which adapts that projection by zero.
/// A trained LoRA's A is mostly its random initialisation: in this basis both factors carry the update's structure,
/// and each component's energy is known, so quantisers can spend bits where ΔW needs them.
/// </summary>
internal static class SvdBasis
{
    public static AdapterPayload Apply(AdapterPayload payload, double energy)
    {
        if (payload.Manifest.Kind != AdapterKind.Lora) throw new ArgumentException("Only LoRA payloads are re-factored.", nameof(payload));
        var adapter = AdapterMaterializer.Materialize(payload);
        var modules = new List<ModuleSpec>();
        var tensors = new List<AdapterTensor>();
        for (int i = 0; i < adapter.Modules.Count; i++)
        {
            var spec = payload.Manifest.Modules[i];
            var m = adapter.Modules[i];
            var svd = LowRankSvd.Of(m);
            int rank = svd.RankForEnergy(energy);
            if (rank == 0) continue;
            var (a, b) = svd.Balanced(rank);
            modules.Add(spec with { Rank = rank, Scale = 1f });
            string prefix = $"base_model.model.{spec.Path}";
            tensors.Add(new AdapterTensor($"{prefix}.lora_A.weight", [rank, spec.InFeatures], a, TensorElementType.F32));
            tensors.Add(new AdapterTensor($"{prefix}.lora_B.weight", [spec.OutFeatures, rank], b, TensorElementType.F32));
        }
        return new AdapterPayload(payload.Manifest with { Modules = modules }, tensors);
    }
}
