using System.Text.Json.Serialization;

namespace Serving.Inference.Decoding;

/// <summary>
/// What an alignment method did, for the response's <c>alignment</c> extension: the rewards of the candidates it
/// weighed (samples, beams), which one won, and for DARWIN the archive of surviving instruction variants.
/// </summary>
public sealed record AlignmentReport
{
    /// <summary><c>best_of_n</c>, <c>args</c> or <c>darwin</c>.</summary>
    public required string Method { get; init; }

    /// <summary>Final reward of every candidate (best-of-n samples, DARWIN beams), in candidate order.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public IReadOnlyList<float>? CandidateRewards { get; init; }

    /// <summary>Index of the winning candidate in <see cref="CandidateRewards"/>.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public int? Chosen { get; init; }

    /// <summary>DARWIN: the instruction variants kept in the archive (the most frequent survivors).</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public IReadOnlyList<string>? Archive { get; init; }

    /// <summary>DARWIN: every variant decoded, in beam order.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public IReadOnlyList<string>? Variants { get; init; }

    /// <summary>ARGS: candidates scored per step (k), and the steps scored.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public int? CandidatesPerStep { get; init; }

    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public int? Steps { get; init; }
}
