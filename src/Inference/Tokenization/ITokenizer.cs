namespace Serving.Inference.Tokenization;

/// <summary>Text ⇄ token ids for one checkpoint. Implementations are immutable and thread-safe.</summary>
public interface ITokenizer
{
    /// <summary>Which family this is: one of <see cref="TokenizerNames"/>.</summary>
    string Name { get; }

    /// <summary>One past the largest id this tokenizer can produce or decode.</summary>
    int VocabSize { get; }

    /// <summary>Beginning-of-sequence id, when the checkpoint names one.</summary>
    int? BosTokenId { get; }

    /// <summary>End-of-sequence id, when the checkpoint names one.</summary>
    int? EosTokenId { get; }

    /// <summary>Whether the checkpoint asks for BOS at the start of a prompt (<c>add_bos_token</c>); a hint for callers of <see cref="Encode"/>.</summary>
    bool AddBosByDefault { get; }

    /// <summary>Special tokens (content → id); their strings in input text encode to these ids.</summary>
    IReadOnlyDictionary<string, int> SpecialTokens { get; }

    /// <summary>Encodes text; special-token strings in the text become their ids. <paramref name="addBos"/> prepends BOS when one exists.</summary>
    int[] Encode(string text, bool addBos = false);

    /// <summary>Decodes ids to text; invalid UTF-8 becomes U+FFFD; ids the tokenizer does not know decode to nothing.</summary>
    string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false);

    /// <summary>A decoder for one generated sequence that emits text only once its UTF-8 is complete.</summary>
    StreamingDecoder CreateStreamingDecoder(bool skipSpecialTokens = false);
}

/// <summary>Built-in tokenizer names.</summary>
public static class TokenizerNames
{
    /// <summary>GPT-2 <c>vocab.json</c> + <c>merges.txt</c>.</summary>
    public const string Gpt2Bpe = "gpt2-bpe";

    /// <summary>Hugging Face <c>tokenizer.json</c> with a BPE model (byte-level or SentencePiece-style).</summary>
    public const string HfBpe = "hf-bpe";

    /// <summary>SentencePiece <c>tokenizer.model</c> (Llama).</summary>
    public const string SentencePiece = "sentencepiece";

    /// <summary>Ids 0..255 are bytes; specials above.</summary>
    public const string Byte = "byte";
}
