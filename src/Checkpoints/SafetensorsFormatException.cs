namespace Serving.Checkpoints;

/// <summary>A safetensors file broke a rule of the format. <see cref="TensorName"/> names the tensor when one is at fault.</summary>
public sealed class SafetensorsFormatException : FormatException
{
    public SafetensorsFormatException(string source, string? tensorName, string reason)
        : base(tensorName is null ? $"{source}: {reason}" : $"{source}: tensor '{tensorName}': {reason}")
    {
        FileName = source;
        TensorName = tensorName;
        Reason = reason;
    }

    /// <summary>The file (or upload) at fault.</summary>
    public string FileName { get; }

    /// <summary>The tensor at fault, or null for file-level problems.</summary>
    public string? TensorName { get; }

    /// <summary>The rule that was broken, without the file name.</summary>
    public string Reason { get; }
}
