using System.Text;

namespace Serving.Inference.Tokenization;

/// <summary>
/// Ids 0..255 are the UTF-8 bytes of the text; ids from 256 up are special tokens (matched verbatim in input text).
/// Used by the project's random-weight fixtures; see <see cref="TokenizerLoader"/> for when it is chosen.
/// </summary>
internal sealed class ByteTokenizer : ITokenizer
{
    /// <summary>The special token a folder without any tokenizer files gets at id 256 (as BOS and EOS) when the model has room for it.</summary>
    public const string DefaultEndOfText = "<|endoftext|>";

    private readonly AddedTokenSplitter _splitter;
    private readonly TokenDecodeTable _table;

    public ByteTokenizer(int vocabSize, IReadOnlyList<AddedToken> specials, int? bosId, int? eosId, bool addBos)
    {
        VocabSize = vocabSize;
        BosTokenId = bosId;
        EosTokenId = eosId;
        AddBosByDefault = addBos && bosId is not null;
        _splitter = new AddedTokenSplitter(specials);
        var map = new Dictionary<string, int>(StringComparer.Ordinal);
        var bytes = new byte[]?[vocabSize];
        var special = new bool[vocabSize];
        for (int b = 0; b < 256; b++) bytes[b] = [(byte)b];
        foreach (var t in specials)
        {
            bytes[t.Id] = Encoding.UTF8.GetBytes(t.Content);
            special[t.Id] = true;
            map[t.Content] = t.Id;
        }
        SpecialTokens = map;
        _table = new TokenDecodeTable(bytes, special, stripLeadingSpace: false);
    }

    public string Name => TokenizerNames.Byte;
    public int VocabSize { get; }
    public int? BosTokenId { get; }
    public int? EosTokenId { get; }
    public bool AddBosByDefault { get; }
    public IReadOnlyDictionary<string, int> SpecialTokens { get; }

    public int[] Encode(string text, bool addBos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length + 1);
        if (addBos && BosTokenId is int bos) ids.Add(bos);
        var segments = new List<Segment>();
        _splitter.Split(text, segments);
        foreach (var seg in segments)
        {
            if (seg.Id >= 0)
            {
                ids.Add(seg.Id);
                continue;
            }
            foreach (byte b in Encoding.UTF8.GetBytes(seg.Text!)) ids.Add(b);
        }
        return ids.ToArray();
    }

    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false) => _table.Decode(ids, skipSpecialTokens);

    public StreamingDecoder CreateStreamingDecoder(bool skipSpecialTokens = false) => new(_table, skipSpecialTokens);

    /// <summary>
    /// Specials for a <c>ByteTokenizer</c> config: <c>added_tokens_decoder</c> entries keep their ids; bos/eos/pad/unk/additional
    /// tokens not listed there get the next free ids from 256 up, in that order.
    /// </summary>
    public static ByteTokenizer FromConfig(string directory, TokenizerConfig config, int vocabSize)
    {
        string file = Path.Combine(directory, "tokenizer_config.json");
        var specials = new List<AddedToken>();
        foreach (var t in config.AddedTokens)
        {
            if (t.Id < 256) throw new TokenizerFormatException(file, $"added token '{t.Content}' has id {t.Id}, but ids 0..255 are bytes");
            specials.Add(t with { Special = true });
        }
        int next = 256;
        foreach (var name in config.DeclaredSpecialTokens())
        {
            if (specials.Exists(s => s.Content == name)) continue;
            while (specials.Exists(s => s.Id == next)) next++;
            specials.Add(new AddedToken(name, next++, Special: true));
        }
        foreach (var t in specials)
            if (t.Id >= vocabSize) throw new TokenizerFormatException(file, $"special token '{t.Content}' has id {t.Id}, beyond the model's vocabulary of {vocabSize}");
        int? Find(string? name) => name is null ? null : specials.Find(s => s.Content == name)?.Id;
        return new ByteTokenizer(vocabSize, specials, Find(config.BosToken), Find(config.EosToken), config.AddBosToken ?? false);
    }

    /// <summary>No tokenizer files at all: bytes, plus <see cref="DefaultEndOfText"/> at 256 as BOS and EOS when the model has ids above 255.</summary>
    public static ByteTokenizer Default(int vocabSize)
    {
        if (vocabSize <= 256) return new ByteTokenizer(vocabSize, [], null, null, false);
        return new ByteTokenizer(vocabSize, [new AddedToken(DefaultEndOfText, 256, Special: true)], 256, 256, false);
    }
}
