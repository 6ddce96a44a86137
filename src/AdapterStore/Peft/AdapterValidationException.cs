namespace Serving.AdapterStore.Peft;

/// <summary>
/// An upload (adapter or reward head) was refused. <see cref="Code"/> is stable (it becomes the ProblemDetails type suffix),
/// the message names the file or tensor and the rule that failed.
/// </summary>
public sealed class AdapterValidationException(string code, string message, string? tensor = null, int status = 422, string? category = null) : Exception(message)
{
    /// <summary>The broader code <see cref="Code"/> belongs to, when it refines one (reward heads: <c>invalid_head_tensors</c>).</summary>
    public string? Category { get; } = category;

    /// <summary>Stable error code, e.g. <c>tensor_shape_mismatch</c>.</summary>
    public string Code { get; } = code;
    /// <summary>The offending tensor, when one is to blame.</summary>
    public string? Tensor { get; } = tensor;
    /// <summary>HTTP status: 400 malformed input, 413 too large, 422 well-formed but not acceptable.</summary>
    public int Status { get; } = status;
}

/// <summary>Stable error codes of refused uploads.</summary>
public static class AdapterErrors
{
    /// <summary>adapter_config.json is missing.</summary>
    public const string ConfigMissing = "config_missing";
    /// <summary>adapter_model.safetensors is missing.</summary>
    public const string WeightsMissing = "weights_missing";
    /// <summary>A pickled adapter_model.bin was sent.</summary>
    public const string PickleRefused = "pickle_refused";
    /// <summary>adapter_config.json is not valid JSON.</summary>
    public const string ConfigInvalidJson = "config_invalid_json";
    /// <summary>A config value has the wrong type or range.</summary>
    public const string ConfigInvalid = "config_invalid";
    /// <summary>peft_type is not LORA, VERA or VBLORA.</summary>
    public const string PeftTypeUnsupported = "peft_type_unsupported";
    /// <summary>DoRA (use_dora or lora_magnitude_vector tensors).</summary>
    public const string DoraUnsupported = "dora_unsupported";
    /// <summary>modules_to_save, classifier heads or other full tensors.</summary>
    public const string FullTensorUnsupported = "full_tensor_unsupported";
    /// <summary>bias other than "none".</summary>
    public const string BiasUnsupported = "bias_unsupported";
    /// <summary>The safetensors file is malformed.</summary>
    public const string SafetensorsInvalid = "safetensors_invalid";
    /// <summary>A tensor name appears twice.</summary>
    public const string TensorDuplicate = "tensor_duplicate";
    /// <summary>A tensor names no module of the base architecture.</summary>
    public const string UnknownModule = "tensor_unknown_module";
    /// <summary>The adapter was made for another architecture.</summary>
    public const string BaseModelMismatch = "base_model_mismatch";
    /// <summary>A layer index the base model does not have.</summary>
    public const string LayerOutOfRange = "tensor_layer_out_of_range";
    /// <summary>A tensor's shape disagrees with its module.</summary>
    public const string ShapeMismatch = "tensor_shape_mismatch";
    /// <summary>A and B (or the config) disagree on the rank.</summary>
    public const string RankMismatch = "rank_mismatch";
    /// <summary>NaN or infinity.</summary>
    public const string NotFinite = "tensor_not_finite";
    /// <summary>An element type that cannot hold adapter weights.</summary>
    public const string DtypeUnsupported = "tensor_dtype_unsupported";
    /// <summary>lora_A without lora_B or the reverse.</summary>
    public const string Unpaired = "tensor_unpaired";
    /// <summary>A tensor for a module target_modules / layers_to_transform excludes.</summary>
    public const string NotTargeted = "tensor_not_targeted";
    /// <summary>The adapter holds no adapter tensors.</summary>
    public const string Empty = "adapter_empty";
    /// <summary>VeRA without its saved projection (save_projection=false).</summary>
    public const string VeraProjectionMissing = "vera_projection_missing";
    /// <summary>The archive cannot be read.</summary>
    public const string ArchiveInvalid = "archive_invalid";
    /// <summary>An archive entry escapes the folder (.., absolute path, link).</summary>
    public const string ArchivePathTraversal = "archive_path_traversal";
    /// <summary>The upload is larger than allowed.</summary>
    public const string TooLarge = "payload_too_large";
    /// <summary>Bad adapter name.</summary>
    public const string NameInvalid = "name_invalid";
    /// <summary>Unknown base model id.</summary>
    public const string BaseModelUnknown = "base_model_unknown";
    /// <summary>Bad codec parameters.</summary>
    public const string CodecInvalid = "codec_invalid";
    /// <summary>The request is not a usable multipart upload.</summary>
    public const string UploadInvalid = "upload_invalid";
}
