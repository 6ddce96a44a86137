namespace Serving.Inference.Tokenization;

/// <summary>Hugging Face-style pipeline: added-token split → normalizer → pre-tokenizer → BPE. Used for <c>tokenizer.json</c> and GPT-2 files.</summary>
internal sealed class BpeTokenizer : ITokenizer
{
    private readonly BpeModel _model;
    private readonly TextNormalizer? _normalizer;
    private readonly PreTokenizer? _preTokenizer;
    private readonly AddedTokenSplitter _splitter;
    private readonly TokenDecodeTable _decodeTable;

    public BpeTokenizer(
        string name,
        BpeModel model,
        TextNormalizer? normalizer,
        PreTokenizer? preTokenizer,
        IReadOnlyList<AddedToken> addedTokens,
        TokenDecodeTable decodeTable,
        int vocabSize,
        SpecialTokenChoice specials)
    {
        Name = name;
        _model = model;
        _normalizer = normalizer;
        _preTokenizer = preTokenizer;
        _splitter = new AddedTokenSplitter(addedTokens);
        _decodeTable = decodeTable;
        VocabSize = vocabSize;
        BosTokenId = specials.BosId;
        EosTokenId = specials.EosId;
        AddBosByDefault = specials.AddBos;
        var special = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var t in addedTokens) if (t.Special) special[t.Content] = t.Id;
        SpecialTokens = special;
    }

    public string Name { get; }
    public int VocabSize { get; }
    public int? BosTokenId { get; }
    public int? EosTokenId { get; }
    public bool AddBosByDefault { get; }
    public IReadOnlyDictionary<string, int> SpecialTokens { get; }

    public int[] Encode(string text, bool addBos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 2);
        if (addBos && BosTokenId is int bos) ids.Add(bos);
        var segments = new List<Segment>();
        _splitter.Split(text, segments);
        var pieces = new List<Piece>();
        foreach (var seg in segments)
        {
            if (seg.Id >= 0)
            {
                ids.Add(seg.Id);
                continue;
            }
            string normalized = _normalizer?.Normalize(seg.Text!) ?? seg.Text!;
            pieces.Clear();
            pieces.Add(new Piece(normalized, seg.AtTextStart));
            _preTokenizer?.Apply(pieces);
            foreach (var p in pieces) _model.EncodeWord(p.Text, ids);
        }
        return ids.ToArray();
    }

    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false) => _decodeTable.Decode(ids, skipSpecialTokens);

    public StreamingDecoder CreateStreamingDecoder(bool skipSpecialTokens = false) => new(_decodeTable, skipSpecialTokens);
}

/// <summary>BOS/EOS ids and whether BOS is added by default, resolved from the checkpoint's files.</summary>
internal readonly record struct SpecialTokenChoice(int? BosId, int? EosId, bool AddBos);
