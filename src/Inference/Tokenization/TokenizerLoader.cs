using Serving.Checkpoints;

namespace Serving.Inference.Tokenization;

/// <summary>
/// Chooses a tokenizer from the files in a checkpoint folder, in this order:
/// <list type="number">
/// <item><c>tokenizer.json</c> (Hugging Face, BPE model) → <see cref="TokenizerNames.HfBpe"/>;</item>
/// <item><c>vocab.json</c> + <c>merges.txt</c> (GPT-2) → <see cref="TokenizerNames.Gpt2Bpe"/>;</item>
/// <item><c>tokenizer.model</c> (SentencePiece) → <see cref="TokenizerNames.SentencePiece"/>;</item>
/// <item>none of these, and <c>tokenizer_config.json</c> says <c>"tokenizer_class": "ByteTokenizer"</c> → <see cref="TokenizerNames.Byte"/>
/// (specials from that config);</item>
/// <item>no tokenizer files at all and <c>vocabSize ≥ 256</c> → <see cref="TokenizerNames.Byte"/>, with <c>&lt;|endoftext|&gt;</c> at id 256
/// as BOS and EOS when <c>vocabSize &gt; 256</c>.</item>
/// </list>
/// <c>tokenizer_config.json</c> (with <c>special_tokens_map.json</c>, <c>added_tokens.json</c>) supplies bos/eos and <c>add_bos_token</c>.
/// Files may be symbolic links (the Hugging Face cache's snapshots); a dangling one is refused by name before anything is
/// chosen, so a missing blob never silently falls through to another tokenizer.
/// </summary>
public static class TokenizerLoader
{
    /// <summary>Every file this loader may read from a checkpoint folder.</summary>
    private static readonly string[] Files =
        ["tokenizer.json", "vocab.json", "merges.txt", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"];

    /// <param name="checkpointDirectory">The checkpoint folder.</param>
    /// <param name="vocabSize">The model's vocabulary size (<c>config.json</c>); a tokenizer with ids beyond it is refused. 0 skips that check (not allowed for the byte tokenizer).</param>
    public static ITokenizer Load(string checkpointDirectory, int vocabSize)
    {
        ArgumentNullException.ThrowIfNull(checkpointDirectory);
        ArgumentOutOfRangeException.ThrowIfNegative(vocabSize);
        if (!Directory.Exists(checkpointDirectory)) throw new DirectoryNotFoundException($"Checkpoint folder '{checkpointDirectory}' does not exist.");
        foreach (var file in Files)
        {
            var path = Path.Combine(checkpointDirectory, file);
            try
            {
                LinkedFiles.ThrowIfDangling(path);
            }
            catch (DanglingLinkException e)
            {
                throw new TokenizerFormatException(path, e.Message, e);
            }
        }

        var config = TokenizerConfig.Read(checkpointDirectory);
        string Path_(string name) => Path.Combine(checkpointDirectory, name);

        ITokenizer tokenizer;
        string source;
        if (File.Exists(Path_("tokenizer.json")))
        {
            source = Path_("tokenizer.json");
            tokenizer = HfTokenizerJsonReader.Read(source, config);
        }
        else if (File.Exists(Path_("vocab.json")) && File.Exists(Path_("merges.txt")))
        {
            source = Path_("merges.txt");
            tokenizer = Gpt2FilesReader.Read(checkpointDirectory, config);
        }
        else if (File.Exists(Path_("tokenizer.model")))
        {
            source = Path_("tokenizer.model");
            tokenizer = SentencePieceModelTokenizer.Read(checkpointDirectory, config);
        }
        else if (File.Exists(Path_("vocab.json")) || File.Exists(Path_("merges.txt")))
        {
            string missing = File.Exists(Path_("vocab.json")) ? "merges.txt" : "vocab.json";
            throw new TokenizerFormatException(Path_(missing), "is missing; GPT-2 BPE needs both vocab.json and merges.txt");
        }
        else if (config.TokenizerClass == "ByteTokenizer")
        {
            source = Path_("tokenizer_config.json");
            if (vocabSize < 256) throw new TokenizerFormatException(source, $"ByteTokenizer needs a model vocabulary of at least 256, got {vocabSize}");
            tokenizer = ByteTokenizer.FromConfig(checkpointDirectory, config, vocabSize);
        }
        else if (config.TokenizerClass is { } cls)
        {
            throw new TokenizerFormatException(Path_("tokenizer_config.json"),
                $"tokenizer_class '{cls}' needs tokenizer.json, vocab.json + merges.txt or tokenizer.model, and none is in the folder");
        }
        else
        {
            source = checkpointDirectory;
            if (vocabSize < 256)
                throw new TokenizerFormatException(checkpointDirectory, $"no tokenizer files, and the model's vocabulary ({vocabSize}) is too small for the byte tokenizer (≥ 256)");
            tokenizer = ByteTokenizer.Default(vocabSize);
        }

        if (vocabSize > 0 && tokenizer.VocabSize > vocabSize)
            throw new TokenizerFormatException(source, $"tokenizer has ids up to {tokenizer.VocabSize - 1}, beyond the model's vocabulary of {vocabSize}");
        return tokenizer;
    }
}
