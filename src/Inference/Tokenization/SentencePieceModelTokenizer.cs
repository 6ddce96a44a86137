using System.Globalization;
using System.Text;
using Microsoft.ML.Tokenizers;

namespace Serving.Inference.Tokenization;

/// <summary>
/// A SentencePiece <c>tokenizer.model</c> (Llama), encoded by <see cref="LlamaTokenizer"/>. Special-token strings are split out
/// first (each remaining segment is encoded on its own, as Hugging Face's legacy Llama tokenizer does); decoding goes through the
/// shared byte table so streaming matches one-shot decoding.
/// </summary>
internal sealed class SentencePieceModelTokenizer : ITokenizer
{
    private readonly LlamaTokenizer _inner;
    private readonly AddedTokenSplitter _splitter;
    private readonly TokenDecodeTable _table;

    private SentencePieceModelTokenizer(LlamaTokenizer inner, List<AddedToken> specials, TokenDecodeTable table, int vocabSize, SpecialTokenChoice choice)
    {
        _inner = inner;
        _splitter = new AddedTokenSplitter(specials);
        _table = table;
        VocabSize = vocabSize;
        BosTokenId = choice.BosId;
        EosTokenId = choice.EosId;
        AddBosByDefault = choice.AddBos;
        var map = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var t in specials) map[t.Content] = t.Id;
        SpecialTokens = map;
    }

    public string Name => TokenizerNames.SentencePiece;
    public int VocabSize { get; }
    public int? BosTokenId { get; }
    public int? EosTokenId { get; }
    public bool AddBosByDefault { get; }
    public IReadOnlyDictionary<string, int> SpecialTokens { get; }

    public static SentencePieceModelTokenizer Read(string directory, TokenizerConfig config)
    {
        string path = Path.Combine(directory, "tokenizer.model");
        LlamaTokenizer inner;
        try
        {
            using var stream = File.OpenRead(path);
            inner = LlamaTokenizer.Create(stream, addBeginOfSentence: false, addEndOfSentence: false);
        }
        catch (Exception e) when (e is not TokenizerFormatException and not OutOfMemoryException)
        {
            throw new TokenizerFormatException(path, $"is not a SentencePiece model this reader supports ({e.GetType().Name}: {e.Message})", e);
        }

        int vocabSize = 0;
        foreach (int id in inner.Vocabulary.Values) vocabSize = Math.Max(vocabSize, id + 1);
        foreach (var t in config.AddedTokens) vocabSize = Math.Max(vocabSize, t.Id + 1);

        var specials = new List<AddedToken>();
        void AddSpecial(string content, int id)
        {
            if (id >= 0 && !specials.Exists(s => s.Id == id)) specials.Add(new AddedToken(content, id, Special: true));
        }
        AddSpecial(inner.BeginningOfSentenceToken, inner.BeginningOfSentenceId);
        AddSpecial(inner.EndOfSentenceToken, inner.EndOfSentenceId);
        AddSpecial(inner.UnknownToken, inner.UnknownId);
        foreach (var t in config.AddedTokens) AddSpecial(t.Content, t.Id);

        var bytes = new byte[]?[vocabSize];
        var special = new bool[vocabSize];
        foreach (var (piece, id) in inner.Vocabulary) bytes[id] = PieceBytes(piece, inner.ByteFallback);
        foreach (var t in specials)
        {
            bytes[t.Id] = Encoding.UTF8.GetBytes(t.Content);
            special[t.Id] = true;
        }
        var table = new TokenDecodeTable(bytes, special, stripLeadingSpace: inner.AddDummyPrefix);

        int? Lookup(string s) => specials.Find(a => a.Content == s)?.Id ?? (inner.Vocabulary.TryGetValue(s, out int id) ? id : null);
        var choice = config.Resolve(directory, Lookup, inner.BeginningOfSentenceId, inner.EndOfSentenceId, fallbackAddBos: true);
        return new SentencePieceModelTokenizer(inner, specials, table, vocabSize, choice);
    }

    private static byte[] PieceBytes(string piece, bool byteFallback)
    {
        if (byteFallback && piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece[5] == '>'
            && byte.TryParse(piece.AsSpan(3, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out byte b))
        {
            return [b];
        }
        return Encoding.UTF8.GetBytes(piece.Replace('▁', ' '));
    }

    public int[] Encode(string text, bool addBos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 2);
        if (addBos && BosTokenId is int bos) ids.Add(bos);
        var segments = new List<Segment>();
        _splitter.Split(text, segments);
        foreach (var seg in segments)
        {
            if (seg.Id >= 0) ids.Add(seg.Id);
            else ids.AddRange(_inner.EncodeToIds(seg.Text!, addBeginningOfSentence: false, addEndOfSentence: false));
        }
        return ids.ToArray();
    }

    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false) => _table.Decode(ids, skipSpecialTokens);

    public StreamingDecoder CreateStreamingDecoder(bool skipSpecialTokens = false) => new(_table, skipSpecialTokens);
}
