using Google.Protobuf;
using Serving.Inference.Tokenization;
using Xunit;

namespace Serving.Inference.Tests.Tokenization;

/// <summary><c>tokenizer.model</c> (SentencePiece BPE, Llama layout), written by hand as protobuf so the expected ids are known.</summary>
public sealed class SentencePieceModelTests
{
    private const int Unk = 0, Bos = 1, Eos = 2;
    private const int Space = 259, H = 260, E = 261, L = 262, O = 263, LL = 264, SpaceH = 265, SpaceHe = 266, Llo = 267, SpaceHello = 268, W = 269, SpaceW = 270;

    private static int Byte(int b) => 3 + b;

    /// <summary>
    /// ModelProto: pieces (1) {piece 1, score 2, type 3: NORMAL 1, UNKNOWN 2, CONTROL 3, BYTE 6}; trainer_spec (2) {model_type 3 = BPE 2,
    /// vocab_size 4, byte_fallback 35, unk/bos/eos/pad ids 40..43}; normalizer_spec (3) {name 1, add_dummy_prefix 3, remove_extra_whitespaces 4, escape_whitespaces 5}.
    /// SentencePiece BPE merges the adjacent pair whose joined piece has the highest score.
    /// </summary>
    private static byte[] ModelBytes()
    {
        var pieces = new List<(string Piece, float Score, int Type)> { ("<unk>", 0, 2), ("<s>", 0, 3), ("</s>", 0, 3) };
        for (int b = 0; b < 256; b++) pieces.Add(($"<0x{b:X2}>", 0, 6));
        pieces.AddRange([("▁", -10, 1), ("h", -11, 1), ("e", -12, 1), ("l", -13, 1), ("o", -14, 1), ("ll", -1, 1), ("▁h", -2, 1),
            ("▁he", -3, 1), ("llo", -4, 1), ("▁hello", -5, 1), ("w", -15, 1), ("▁w", -6, 1)]);

        using var ms = new MemoryStream();
        var output = new CodedOutputStream(ms);
        foreach (var (piece, score, type) in pieces)
        {
            output.WriteTag(1, WireFormat.WireType.LengthDelimited);
            output.WriteBytes(Message(o =>
            {
                o.WriteTag(1, WireFormat.WireType.LengthDelimited); o.WriteString(piece);
                o.WriteTag(2, WireFormat.WireType.Fixed32); o.WriteFloat(score);
                o.WriteTag(3, WireFormat.WireType.Varint); o.WriteInt32(type);
            }));
        }
        output.WriteTag(2, WireFormat.WireType.LengthDelimited);
        output.WriteBytes(Message(o =>
        {
            o.WriteTag(3, WireFormat.WireType.Varint); o.WriteInt32(2);
            o.WriteTag(4, WireFormat.WireType.Varint); o.WriteInt32(pieces.Count);
            o.WriteTag(35, WireFormat.WireType.Varint); o.WriteBool(true);
            o.WriteTag(40, WireFormat.WireType.Varint); o.WriteInt32(Unk);
            o.WriteTag(41, WireFormat.WireType.Varint); o.WriteInt32(Bos);
            o.WriteTag(42, WireFormat.WireType.Varint); o.WriteInt32(Eos);
            o.WriteTag(43, WireFormat.WireType.Varint); o.WriteInt32(-1);
        }));
        output.WriteTag(3, WireFormat.WireType.LengthDelimited);
        output.WriteBytes(Message(o =>
        {
            o.WriteTag(1, WireFormat.WireType.LengthDelimited); o.WriteString("identity");
            o.WriteTag(3, WireFormat.WireType.Varint); o.WriteBool(true);
            o.WriteTag(4, WireFormat.WireType.Varint); o.WriteBool(false);
            o.WriteTag(5, WireFormat.WireType.Varint); o.WriteBool(true);
        }));
        output.Flush();
        return ms.ToArray();
    }

    private static ByteString Message(Action<CodedOutputStream> write)
    {
        using var ms = new MemoryStream();
        var o = new CodedOutputStream(ms);
        write(o);
        o.Flush();
        return ByteString.CopyFrom(ms.ToArray());
    }

    private static ITokenizer Load()
    {
        using var folder = new TempFolder();
        File.WriteAllBytes(folder.File("tokenizer.model"), ModelBytes());
        return TokenizerLoader.Load(folder.Path, 300);
    }

    [Fact]
    public void Encode_HandBuiltModel_MergesByScoreAndFallsBackToBytes()
    {
        var tok = Load();
        Assert.Equal(TokenizerNames.SentencePiece, tok.Name);
        // "▁hello▁world": ▁hello; ▁w; o; r and d are not pieces → <0x72>, <0x64>.
        Assert.Equal([SpaceHello, SpaceW, O, Byte(0x72), L, Byte(0x64)], tok.Encode("hello world"));
        Assert.Equal([Bos, SpaceHello], tok.Encode("hello", addBos: true));
        Assert.Equal([Bos, SpaceHello, Eos], tok.Encode("<s>hello</s>"));
        Assert.Equal(Bos, tok.BosTokenId);
        Assert.Equal(Eos, tok.EosTokenId);
        Assert.True(tok.AddBosByDefault);
    }

    [Theory]
    [InlineData("hello world")]
    [InlineData("héllo 中文 👍🏽")]
    public void Decode_OfEncode_RoundTripsAndStreams(string text)
    {
        var tok = Load();
        int[] ids = tok.Encode(text, addBos: true);
        Assert.Equal(text, tok.Decode(ids, skipSpecialTokens: true));
        var decoder = tok.CreateStreamingDecoder(skipSpecialTokens: true);
        string streamed = string.Concat(ids.Select(decoder.Append)) + decoder.Flush();
        Assert.Equal(text, streamed);
    }
}
