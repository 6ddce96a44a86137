namespace Serving.Checkpoints.RewardHeads;

/// <summary>
/// A reward head's files are malformed or do not fit the base model. <see cref="Code"/> is stable for clients
/// (<c>invalid_head_config</c>, <c>invalid_head_tensors</c>, <c>head_base_mismatch</c>); <see cref="Reason"/> names the
/// rule within it for the tensor file (missing tensor, shape, non-finite value, …); the message says what to fix.
/// </summary>
public sealed class RewardHeadFormatException(string code, string message, string? reason = null) : FormatException(message)
{
    /// <summary>Malformed config.json (not JSON, wrong kind, missing or invalid field).</summary>
    public const string InvalidConfig = "invalid_head_config";

    /// <summary>head.safetensors is malformed, lacks a tensor, has a wrong shape or non-finite values.</summary>
    public const string InvalidTensors = "invalid_head_tensors";

    /// <summary>Well-formed, but made for another base (layer out of range, input width, base name).</summary>
    public const string BaseMismatch = "head_base_mismatch";

    /// <summary>Reason under <see cref="InvalidTensors"/>: the safetensors file itself cannot be parsed.</summary>
    public const string SafetensorsInvalid = "head_safetensors_invalid";

    /// <summary>Reason under <see cref="InvalidTensors"/>: a tensor the config names is absent.</summary>
    public const string TensorMissing = "head_tensor_missing";

    /// <summary>Reason under <see cref="InvalidTensors"/>: a tensor's shape does not chain (rank, widths, one output).</summary>
    public const string TensorShape = "head_tensor_shape";

    /// <summary>Reason under <see cref="InvalidTensors"/>: NaN or infinity in a tensor.</summary>
    public const string TensorNotFinite = "head_tensor_not_finite";

    /// <summary>Reason under <see cref="InvalidTensors"/>: more parameters than a head may have.</summary>
    public const string TooLarge = "head_too_large";

    public string Code { get; } = code;

    /// <summary>The specific rule that failed under <see cref="Code"/>, null when the code says it all.</summary>
    public string? Reason { get; } = reason;
}
