using System.Text;
using Serving.Inference.Tokenization;
using Xunit;
using static Serving.Inference.Tests.Tokenization.SentencePieceStyleJson;

namespace Serving.Inference.Tests.Tokenization;

public sealed class StreamingDecoderTests(Gpt2Reference gpt2) : IClassFixture<Gpt2Reference>
{
    private const string MultiByteText = "café 中文 👍🏽 naïve 日本 🎉!";

    private static ITokenizer ByteTokenizer()
    {
        using var empty = new TempFolder();
        return TokenizerLoader.Load(empty.Path, 300);
    }

    private static ITokenizer SentencePieceStyle()
    {
        using var folder = new TempFolder();
        folder.WriteJson("tokenizer.json", Build());
        folder.WriteJson("tokenizer_config.json", Config());
        return TokenizerLoader.Load(folder.Path, 300);
    }

    /// <summary>Streams ids one at a time; checks every piece is whole text and the total equals one-shot decoding.</summary>
    private static List<string> StreamAndCheck(ITokenizer tok, int[] ids, bool skipSpecial = false)
    {
        var decoder = tok.CreateStreamingDecoder(skipSpecial);
        var pieces = new List<string>();
        foreach (int id in ids)
        {
            string piece = decoder.Append(id);
            Assert.DoesNotContain('\uFFFD', piece);
            for (int i = 0; i < piece.Length; i++)
            {
                if (char.IsHighSurrogate(piece[i])) Assert.True(i + 1 < piece.Length && char.IsLowSurrogate(piece[i + 1]), $"lone high surrogate in '{piece}'");
                else if (char.IsLowSurrogate(piece[i])) Assert.True(i > 0 && char.IsHighSurrogate(piece[i - 1]), $"lone low surrogate in '{piece}'");
            }
            pieces.Add(piece);
        }
        pieces.Add(decoder.Flush());
        Assert.Equal(tok.Decode(ids, skipSpecial), string.Concat(pieces));
        return pieces;
    }

    [Fact]
    public void Append_ByteTokensOfMultiByteCharacters_EmitsOnlyWholeCharacters()
    {
        var tok = ByteTokenizer();
        int[] ids = tok.Encode(MultiByteText);
        Assert.Equal(Encoding.UTF8.GetByteCount(MultiByteText), ids.Length);
        var pieces = StreamAndCheck(tok, ids);
        Assert.Equal(MultiByteText, string.Concat(pieces));
        // Each byte of 中 (E4 B8 AD): nothing, nothing, then the character.
        int at = Encoding.UTF8.GetByteCount("café ");
        Assert.Equal(["", "", "中"], pieces.Skip(at).Take(3));
        // 👍 (4 bytes) completes as one surrogate pair; the skin tone 🏽 is another.
        int thumbs = Encoding.UTF8.GetByteCount("café 中文 ");
        Assert.Equal(["", "", "", "👍", "", "", "", "🏽"], pieces.Skip(thumbs).Take(8));
    }

    [Fact]
    public void Append_SentencePieceByteFallback_MatchesDecodeAndStripsDummyPrefix()
    {
        var tok = SentencePieceStyle();
        int[] ids = tok.Encode("hello " + MultiByteText, addBos: true);
        var pieces = StreamAndCheck(tok, ids, skipSpecial: true);
        Assert.Equal("hello " + MultiByteText, string.Concat(pieces));
        Assert.Equal("hello", pieces[1]); // BOS skipped, then "▁hello" without the dummy-prefix space
        StreamAndCheck(tok, ids, skipSpecial: false);
    }

    [Fact]
    public void Append_Gpt2TokensSplittingCharacters_MatchesDecode()
    {
        var tok = gpt2.Load("vocab+merges");
        string text = "Emoji 👍🏽🎉 and 中文分词 and ü, then <|endoftext|> done";
        int[] ids = tok.Encode(text);
        // GPT-2 has byte tokens for rare characters, so some characters really are split across tokens here.
        Assert.Contains(ids, id => tok.Decode([id]).Contains('\uFFFD'));
        Assert.Equal(text, string.Concat(StreamAndCheck(tok, ids)));
        Assert.Equal(text.Replace("<|endoftext|>", ""), string.Concat(StreamAndCheck(tok, ids, skipSpecial: true)));
    }

    [Fact]
    public void Flush_IncompleteOrInvalidBytes_BecomeReplacementCharactersLikeDecode()
    {
        var tok = ByteTokenizer();
        int[][] cases = [[0xE4, 0xB8], [0xC3, 'a'], [0x80, 'b', 0xF0, 0x9F], ['x', 0xFF, 0xFE, 'y'], [0xED, 0xA0, 0x80]];
        foreach (var ids in cases)
        {
            var decoder = tok.CreateStreamingDecoder();
            var sb = new StringBuilder();
            foreach (int id in ids) sb.Append(decoder.Append(id));
            sb.Append(decoder.Flush());
            Assert.Equal(tok.Decode(ids), sb.ToString());
            Assert.Contains('\uFFFD', sb.ToString());
        }
    }

    [Fact]
    public void TryAppend_DestinationTooSmall_ReturnsFalseAndConsumesNothing()
    {
        var tok = ByteTokenizer();
        var decoder = tok.CreateStreamingDecoder();
        Span<char> dest = stackalloc char[8];
        Assert.True(decoder.TryAppend(0xE4, dest, out int n));
        Assert.Equal(0, n);
        Assert.False(decoder.TryAppend(0xB8, dest[..1], out n)); // 1 pending + 1 new byte may need 2 chars
        Assert.Equal(0, n);
        Assert.True(decoder.TryAppend(0xB8, dest, out n));
        Assert.True(decoder.TryAppend(0xAD, dest, out n));
        Assert.Equal("中", dest[..n].ToString());
    }

    [Fact]
    public void TryAppend_SteadyState_DoesNotAllocate()
    {
        var tok = gpt2.Load("vocab+merges");
        int[] ids = tok.Encode("Streaming text with ü, 中文 and 👍🏽 " + string.Concat(Enumerable.Repeat("more words ", 20)));
        var decoder = tok.CreateStreamingDecoder();
        var dest = new char[decoder.MaxCharsPerAppend];
        foreach (int id in ids) decoder.TryAppend(id, dest, out _); // warm up (JIT)
        decoder.Flush(dest);

        long before = GC.GetAllocatedBytesForCurrentThread();
        int total = 0;
        foreach (int id in ids)
        {
            Assert.True(decoder.TryAppend(id, dest, out int n));
            total += n;
        }
        total += decoder.Flush(dest);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(0, allocated);
        Assert.Equal(tok.Decode(ids).Length, total);
    }

    [Fact]
    public void Append_NothingCompleted_ReturnsEmptyWithoutAllocating()
    {
        var tok = ByteTokenizer();
        var decoder = tok.CreateStreamingDecoder();
        decoder.Append(0xF0);
        decoder.Flush();
        long before = GC.GetAllocatedBytesForCurrentThread();
        string a = decoder.Append(0xF0), b = decoder.Append(0x9F), c = decoder.Append(0x91);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Same(string.Empty, a);
        Assert.Same(string.Empty, b);
        Assert.Same(string.Empty, c);
        Assert.Equal(0, allocated);
        Assert.Equal("👍", decoder.Append(0x8D));
    }

    [Fact]
    public void Append_UnknownId_ProducesNothing()
    {
        var tok = ByteTokenizer();
        var decoder = tok.CreateStreamingDecoder();
        Assert.Equal("", decoder.Append(299)); // inside the model's vocabulary but not a token
        Assert.Equal("", decoder.Append(100_000));
        Assert.Equal("", tok.Decode([299, 100_000]));
    }
}
