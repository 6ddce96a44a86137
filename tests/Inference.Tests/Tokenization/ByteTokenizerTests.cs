using System.Text.Json.Nodes;
using Serving.Inference.Tokenization;
using Xunit;

namespace Serving.Inference.Tests.Tokenization;

public sealed class ByteTokenizerTests
{
    [Fact]
    public void Load_NoTokenizerFiles_GivesBytesWithEndOfTextAt256()
    {
        using var folder = new TempFolder();
        folder.Write("config.json", "{}");
        var tok = TokenizerLoader.Load(folder.Path, 320);
        Assert.Equal(TokenizerNames.Byte, tok.Name);
        Assert.Equal(320, tok.VocabSize);
        Assert.Equal([0x68, 0x69, 0xC3, 0xA9], tok.Encode("hié"));
        Assert.Equal([256, 0x61, 256], tok.Encode("<|endoftext|>a<|endoftext|>"));
        Assert.Equal(256, tok.EosTokenId);
        Assert.Equal(256, tok.BosTokenId);
        Assert.Equal([256, 0x61], tok.Encode("a", addBos: true));
        Assert.Equal("hié", tok.Decode([0x68, 0x69, 0xC3, 0xA9]));
        Assert.Equal("a", tok.Decode([256, 0x61], skipSpecialTokens: true));
    }

    [Fact]
    public void Load_NoTokenizerFilesAndExactly256_HasNoSpecials()
    {
        using var folder = new TempFolder();
        var tok = TokenizerLoader.Load(folder.Path, 256);
        Assert.Null(tok.EosTokenId);
        Assert.Empty(tok.SpecialTokens);
        Assert.Equal([0x3C, 0x73, 0x3E], tok.Encode("<s>"));
    }

    [Fact]
    public void Load_ByteTokenizerConfig_TakesSpecialsFromConfig()
    {
        using var folder = new TempFolder();
        folder.WriteJson("tokenizer_config.json", new JsonObject
        {
            ["tokenizer_class"] = "ByteTokenizer",
            ["bos_token"] = "<s>",
            ["eos_token"] = new JsonObject { ["content"] = "</s>" },
            ["pad_token"] = "<pad>",
            ["add_bos_token"] = true,
            ["added_tokens_decoder"] = new JsonObject { ["260"] = new JsonObject { ["content"] = "</s>", ["special"] = true } },
        });
        var tok = TokenizerLoader.Load(folder.Path, 264);
        Assert.Equal(TokenizerNames.Byte, tok.Name);
        Assert.Equal(256, tok.BosTokenId); // not in added_tokens_decoder: first free id
        Assert.Equal(260, tok.EosTokenId); // as listed
        Assert.Equal(257, tok.SpecialTokens["<pad>"]);
        Assert.True(tok.AddBosByDefault);
        Assert.Equal([256, 0x6F, 0x6B, 260], tok.Encode("ok</s>", addBos: true));
        Assert.Equal("<s>ok</s>", tok.Decode([256, 0x6F, 0x6B, 260]));
    }
}
