using Serving.Checkpoints;

namespace Serving.Fixtures;

/// <summary>
/// Tiny random checkpoints of each Llama-architecture family and rotary variant the engine serves, small enough for
/// float64 reference tests and for cross-checking against transformers (<c>bench/gpu/hf_families</c>). Lengths are
/// chosen so that a prompt of 40 tokens and 16 decode steps cross every threshold: the original context of
/// dynamic/yarn (32), the sliding windows (24, 30), llama3's smoothing band (wavelengths between 16 and 64 positions).
/// </summary>
public static class FamilyFixtures
{
    private static FixtureShape Tiny(string family) => new()
    {
        Architecture = ModelArchitecture.Llama, Family = family, Hidden = 64, Layers = 2, Heads = 4, KvHeads = 2, Intermediate = 96,
        Vocab = 320, MaxPositions = 128, RopeTheta = 10000f, TieEmbeddings = false, InitStd = 0.2f,
    };

    private static Dictionary<string, object?> Rope(params (string Key, object Value)[] entries) =>
        new() { ["rope_scaling"] = entries.ToDictionary(e => e.Key, e => e.Value) };

    /// <summary>The fixtures by name.</summary>
    public static IReadOnlyDictionary<string, FixtureShape> All { get; } = new Dictionary<string, FixtureShape>
    {
        // Llama 3.x: llama3 smoothing (with head_dim 16 the wavelengths 6.3, 19.9, 62.8, 199, ... straddle 64/4 and 64/1).
        ["tiny-llama3"] = Tiny("llama") with
        {
            ExtraConfig = Rope(("rope_type", "llama3"), ("factor", 8.0), ("low_freq_factor", 1.0), ("high_freq_factor", 4.0), ("original_max_position_embeddings", 64)),
        },
        ["tiny-llama3-tied"] = Tiny("llama") with
        {
            TieEmbeddings = true,
            ExtraConfig = Rope(("rope_type", "llama3"), ("factor", 8.0), ("low_freq_factor", 1.0), ("high_freq_factor", 4.0), ("original_max_position_embeddings", 64)),
        },
        ["tiny-llama-linear"] = Tiny("llama") with { ExtraConfig = Rope(("type", "linear"), ("factor", 2.0)) },
        // Dynamic NTK from 32 positions: a 40-token prompt already crosses the original length.
        ["tiny-llama-dynamic"] = Tiny("llama") with { MaxPositions = 32, ExtraConfig = Rope(("rope_type", "dynamic"), ("factor", 4.0)) },
        ["tiny-llama-yarn"] = Tiny("llama") with
        {
            ExtraConfig = Rope(("rope_type", "yarn"), ("factor", 4.0), ("original_max_position_embeddings", 32)),
        },
        // Qwen3: q/k norms, head_dim 32 ≠ hidden / heads, tied.
        ["tiny-qwen3"] = Tiny("qwen3") with { HeadDim = 32, TieEmbeddings = true, RopeTheta = 1000000f },
        // Mistral: every layer windowed at 24 tokens.
        ["tiny-mistral"] = Tiny("mistral") with { ExtraConfig = new Dictionary<string, object?> { ["sliding_window"] = 24 } },
        // Phi-3: fused projections, window 30, half the head rotary (Phi-4-mini style partial_rotary_factor).
        ["tiny-phi3"] = Tiny("phi3") with
        {
            ExtraConfig = new Dictionary<string, object?> { ["sliding_window"] = 30, ["partial_rotary_factor"] = 0.5, ["original_max_position_embeddings"] = 128 },
        },
        // Gemma 2: layer 0 sliding (24), layer 1 full; head_dim 32, query_pre_attn_scalar 24; soft-caps low enough to bite.
        ["tiny-gemma2"] = Tiny("gemma2") with
        {
            HeadDim = 32, TieEmbeddings = true,
            ExtraConfig = new Dictionary<string, object?>
            {
                ["sliding_window"] = 24, ["query_pre_attn_scalar"] = 24, ["attn_logit_softcapping"] = 2.0, ["final_logit_softcapping"] = 5.0,
            },
        },
    };

    public static IEnumerable<string> Names => All.Keys;

    public static FixtureShape? TryGet(string name) => All.TryGetValue(name, out var shape) ? shape : null;
}
