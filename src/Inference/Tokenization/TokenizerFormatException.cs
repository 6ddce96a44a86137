namespace Serving.Inference.Tokenization;

/// <summary>A tokenizer file is missing, malformed or uses a feature this reader does not support.</summary>
public sealed class TokenizerFormatException : Exception
{
    /// <summary>Creates the exception; the message names the file and the reason.</summary>
    public TokenizerFormatException(string filePath, string reason, Exception? inner = null)
        : base($"{Path.GetFileName(filePath)}: {reason} (file '{filePath}')", inner)
    {
        FilePath = filePath;
        Reason = reason;
    }

    /// <summary>The file at fault.</summary>
    public string FilePath { get; }

    /// <summary>What is wrong with it.</summary>
    public string Reason { get; }
}
