namespace Serving.Checkpoints.RewardHeads;

/// <summary>
/// A reward head's files are malformed or do not fit the base model. <see cref="Code"/> is stable for clients
/// (<c>invalid_head_config</c>, <c>invalid_head_tensors</c>, <c>head_base_mismatch</c>); the message says what to fix.
/// </summary>
public sealed class RewardHeadFormatException(string code, string message) : FormatException(message)
{
    /// <summary>Malformed config.json (not JSON, wrong kind, missing or invalid field).</summary>
    public const string InvalidConfig = "invalid_head_config";

    /// <summary>head.safetensors is malformed, lacks a tensor, has a wrong shape or non-finite values.</summary>
    public const string InvalidTensors = "invalid_head_tensors";

    /// <summary>Well-formed, but made for another base (layer out of range, input width, base name).</summary>
    public const string BaseMismatch = "head_base_mismatch";

    public string Code { get; } = code;
}
