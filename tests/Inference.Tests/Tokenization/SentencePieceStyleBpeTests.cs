using System.Text.Json.Nodes;
using Serving.Inference.Tokenization;
using Xunit;
using static Serving.Inference.Tests.Tokenization.SentencePieceStyleJson;

namespace Serving.Inference.Tests.Tokenization;

public sealed class SentencePieceStyleBpeTests
{
    private static ITokenizer Load(JsonObject tokenizerJson, JsonObject? config = null)
    {
        using var folder = new TempFolder();
        folder.WriteJson("tokenizer.json", tokenizerJson);
        if (config is not null) folder.WriteJson("tokenizer_config.json", config);
        return TokenizerLoader.Load(folder.Path, 300);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Encode_HelloWorld_MergesByRank(bool pairMerges)
    {
        var tok = Load(Build(pairMerges), Config());
        // "▁hello▁world": ▁hello by ranks 0 (l l), 1, 2, 3, 4; "▁world": ▁w (5), then or (6); l and d stay.
        Assert.Equal([SpaceHello, SpaceW, Or, L, D], tok.Encode("hello world"));
        Assert.Equal([Bos, SpaceHello, SpaceW, Or, L, D], tok.Encode("hello world", addBos: true));
    }

    [Fact]
    public void Encode_CharacterOutsideVocab_FallsBackToByteTokens()
    {
        var tok = Load(Build(), Config());
        // "▁hé": ▁h merges; é is not a piece → its UTF-8 bytes C3 A9.
        Assert.Equal([SpaceH, Byte(0xC3), Byte(0xA9)], tok.Encode("hé"));
        // 👍 = F0 9F 91 8D.
        Assert.Equal([Space, Byte(0xF0), Byte(0x9F), Byte(0x91), Byte(0x8D)], tok.Encode("👍"));
    }

    [Fact]
    public void Encode_LeadingSpaceAndSpecials_FollowNormalizerPerSegment()
    {
        var tok = Load(Build(), Config());
        // " hello" → "▁▁hello": the first ▁ stays alone, the second starts ▁hello.
        Assert.Equal([Space, SpaceHello], tok.Encode(" hello"));
        // Added tokens are split out first; each text segment is normalised on its own (so gets its own ▁).
        Assert.Equal([Bos, SpaceHello, Eos], tok.Encode("<s>hello</s>"));
        Assert.Equal(new Dictionary<string, int> { ["<unk>"] = Unk, ["<s>"] = Bos, ["</s>"] = Eos }, tok.SpecialTokens);
    }

    [Fact]
    public void Config_BosEosAndAddBos_AreRead()
    {
        var tok = Load(Build(), Config());
        Assert.Equal(Bos, tok.BosTokenId);
        Assert.Equal(Eos, tok.EosTokenId);
        Assert.True(tok.AddBosByDefault);
        Assert.Equal(274, tok.VocabSize);
        Assert.Equal(TokenizerNames.HfBpe, tok.Name);

        var noBos = Config();
        noBos["add_bos_token"] = false;
        Assert.False(Load(Build(), noBos).AddBosByDefault);
    }

    [Fact]
    public void Config_Missing_BosComesFromPostProcessorTemplate()
    {
        var tok = Load(Build());
        Assert.Equal(Bos, tok.BosTokenId);
        Assert.Equal(Eos, tok.EosTokenId);
        Assert.True(tok.AddBosByDefault);
    }

    [Fact]
    public void Decode_StripsTheDummyPrefixAndJoinsByteTokens()
    {
        var tok = Load(Build(), Config());
        Assert.Equal("hello world", tok.Decode([SpaceHello, SpaceW, Or, L, D]));
        Assert.Equal("<s> hello", tok.Decode([Bos, SpaceHello]));
        Assert.Equal("hello", tok.Decode([Bos, SpaceHello], skipSpecialTokens: true));
        Assert.Equal("hé", tok.Decode([SpaceH, Byte(0xC3), Byte(0xA9)]));
    }

    [Theory]
    [InlineData("héllo wörld")]
    [InlineData("中文 和 日本語")]
    [InlineData("emoji 👍🏽 and 🇫🇷 flags")]
    [InlineData("  two leading spaces, trailing  ")]
    [InlineData("Ελληνικά\nnew line\ttab")]
    public void Decode_OfEncode_RoundTripsNonAscii(string text)
    {
        var tok = Load(Build(), Config());
        int[] ids = tok.Encode(text);
        Assert.Equal(text, tok.Decode(ids));
        Assert.Equal(text, tok.Decode(tok.Encode(text, addBos: true), skipSpecialTokens: true));
    }

    [Fact]
    public void Encode_NoByteFallback_UsesUnkAndFusesWhenAsked()
    {
        var plain = Load(Build(byteFallback: false));
        Assert.Equal([SpaceH, Unk, Unk], plain.Encode("hé€"));
        var fused = Load(Build(byteFallback: false, fuseUnk: true));
        Assert.Equal([SpaceH, Unk], fused.Encode("hé€"));
    }

    [Fact]
    public void Encode_IgnoreMerges_TakesWholeWordFromVocab()
    {
        // "▁world" is in this vocabulary but no merge path builds it; ignore_merges looks the whole pre-token up first.
        JsonObject Json(bool ignore)
        {
            var json = Build();
            json["model"]!["vocab"]!["▁world"] = 274;
            json["model"]!["ignore_merges"] = ignore;
            json["pre_tokenizer"] = new JsonObject { ["type"] = "Metaspace", ["replacement"] = "▁", ["prepend_scheme"] = "always", ["split"] = true };
            json["normalizer"] = null;
            return json;
        }
        Assert.Equal([SpaceHello, SpaceW, Or, L, D], Load(Json(ignore: false)).Encode("hello world"));
        Assert.Equal([SpaceHello, 274], Load(Json(ignore: true)).Encode("hello world"));
    }

    [Fact]
    public void MetaspaceFirst_PrependsOnlyAtTextStartAndDecoderStripsIt()
    {
        // Newer Mistral/Llama exports: no normaliser, Metaspace pre-tokenizer (prepend_scheme "first") and Metaspace decoder.
        var json = Build();
        json["normalizer"] = null;
        json["pre_tokenizer"] = new JsonObject { ["type"] = "Metaspace", ["replacement"] = "▁", ["prepend_scheme"] = "first", ["split"] = false };
        json["decoder"] = new JsonObject { ["type"] = "Metaspace", ["replacement"] = "▁", ["prepend_scheme"] = "first", ["split"] = false };
        var tok = Load(json);
        Assert.Equal([SpaceHello], tok.Encode("hello"));
        // After a special token the segment does not start the text: no ▁, so "hello" = h e llo.
        Assert.Equal([Bos, H, E, Llo], tok.Encode("<s>hello"));
        Assert.Equal("hello world", tok.Decode([SpaceHello, SpaceW, Or, L, D]));
    }
}
