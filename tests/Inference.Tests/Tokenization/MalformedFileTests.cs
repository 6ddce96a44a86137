using System.Text.Json.Nodes;
using Serving.Inference.Tokenization;
using Xunit;

namespace Serving.Inference.Tests.Tokenization;

/// <summary>Each malformed or unsupported file gives a <see cref="TokenizerFormatException"/> naming the file and the problem.</summary>
public sealed class MalformedFileTests
{
    private static TokenizerFormatException LoadFails(TempFolder folder, string expectedFile, string expectedReason, int vocabSize = 300)
    {
        var e = Assert.Throws<TokenizerFormatException>(() => TokenizerLoader.Load(folder.Path, vocabSize));
        Assert.Equal(expectedFile, Path.GetFileName(e.FilePath));
        Assert.Contains(expectedReason, e.Reason);
        Assert.Contains(expectedFile, e.Message);
        return e;
    }

    private static TempFolder WithTokenizerJson(Action<JsonObject> edit)
    {
        var json = SentencePieceStyleJson.Build();
        edit(json);
        var folder = new TempFolder();
        folder.WriteJson("tokenizer.json", json);
        return folder;
    }

    [Fact]
    public void TokenizerJson_NotJson_Throws()
    {
        using var folder = new TempFolder().Write("tokenizer.json", "{\"model\": {\"type\": \"BPE\", ");
        LoadFails(folder, "tokenizer.json", "not valid JSON");
    }

    [Fact]
    public void TokenizerJson_InvalidUtf8InAString_ThrowsNamingTheField()
    {
        // Found by tools/fuzz (target tokenizer-json): the string was read later as an InvalidOperationException.
        var json = SentencePieceStyleJson.Build();
        json["normalizer"] = null;
        var bytes = System.Text.Encoding.UTF8.GetBytes(json.ToJsonString().Replace("\"normalizer\":null", "\"normalizer\":\"FUZZMARK\"", StringComparison.Ordinal));
        bytes[bytes.AsSpan().IndexOf("FUZZMARK"u8)] = 0xff;
        using var folder = new TempFolder();
        File.WriteAllBytes(System.IO.Path.Combine(folder.Path, "tokenizer.json"), bytes);
        LoadFails(folder, "tokenizer.json", "not valid UTF-8 (or an escape that leaves a lone surrogate) in 'normalizer'");
    }

    [Fact]
    public void TokenizerJson_NoModel_Throws()
    {
        using var folder = new TempFolder().Write("tokenizer.json", "{\"version\": \"1.0\"}");
        LoadFails(folder, "tokenizer.json", "no 'model'");
    }

    [Theory]
    [InlineData("WordPiece")]
    [InlineData("Unigram")]
    [InlineData("WordLevel")]
    public void TokenizerJson_UnsupportedModelType_Throws(string type)
    {
        using var folder = WithTokenizerJson(j => j["model"]!["type"] = type);
        LoadFails(folder, "tokenizer.json", $"model type '{type}' is not supported");
    }

    [Fact]
    public void TokenizerJson_MergeWithUnknownToken_Throws()
    {
        using var folder = WithTokenizerJson(j => j["model"]!["merges"]!.AsArray().Add("q z"));
        LoadFails(folder, "tokenizer.json", "refers to unknown token 'q'");
    }

    [Fact]
    public void TokenizerJson_MergeResultNotInVocab_Throws()
    {
        using var folder = WithTokenizerJson(j => j["model"]!["merges"]!.AsArray().Add("h o"));
        LoadFails(folder, "tokenizer.json", "produces 'ho', which is not in the vocabulary");
    }

    [Theory]
    [InlineData("\"l l l\"")]
    [InlineData("\"ll\"")]
    [InlineData("[\"l\"]")]
    [InlineData("42")]
    public void TokenizerJson_MalformedMergeEntry_Throws(string entry)
    {
        using var folder = WithTokenizerJson(j => j["model"]!["merges"]!.AsArray().Add(JsonNode.Parse(entry)));
        LoadFails(folder, "tokenizer.json", "model.merges[7]");
    }

    [Fact]
    public void TokenizerJson_VocabIdNotInteger_Throws()
    {
        using var folder = WithTokenizerJson(j => j["model"]!["vocab"]!["h"] = "260");
        LoadFails(folder, "tokenizer.json", "model.vocab id of 'h'");
    }

    [Fact]
    public void TokenizerJson_UnknownPreTokenizer_Throws()
    {
        using var folder = WithTokenizerJson(j => j["pre_tokenizer"] = new JsonObject { ["type"] = "BertPreTokenizer" });
        LoadFails(folder, "tokenizer.json", "unsupported pre_tokenizer type 'BertPreTokenizer'");
    }

    [Fact]
    public void TokenizerJson_UnknownNormalizer_Throws()
    {
        using var folder = WithTokenizerJson(j => j["normalizer"] = new JsonObject { ["type"] = "Precompiled", ["precompiled_charsmap"] = "AAAA" });
        LoadFails(folder, "tokenizer.json", "unsupported normalizer type 'Precompiled'");
    }

    [Fact]
    public void TokenizerJson_UnknownDecoder_Throws()
    {
        using var folder = WithTokenizerJson(j => j["decoder"] = new JsonObject { ["type"] = "WordPiece", ["prefix"] = "##" });
        LoadFails(folder, "tokenizer.json", "unsupported decoder type 'WordPiece'");
    }

    [Fact]
    public void TokenizerJson_BadRegex_Throws()
    {
        using var folder = WithTokenizerJson(j => j["pre_tokenizer"] = new JsonObject
        {
            ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = "(unclosed" }, ["behavior"] = "Isolated",
        });
        LoadFails(folder, "tokenizer.json", "regex .NET cannot parse");
    }

    [Fact]
    public void TokenizerJson_UnkTokenNotInVocab_Throws()
    {
        using var folder = WithTokenizerJson(j => j["model"]!["unk_token"] = "[UNK]");
        LoadFails(folder, "tokenizer.json", "unk_token '[UNK]' is not in the vocabulary");
    }

    [Fact]
    public void TokenizerJson_AddedTokenWithoutId_Throws()
    {
        using var folder = WithTokenizerJson(j => j["added_tokens"]!.AsArray().Add(new JsonObject { ["content"] = "<x>" }));
        LoadFails(folder, "tokenizer.json", "added_tokens[3] ('<x>') has no non-negative integer 'id'");
    }

    [Fact]
    public void TokenizerJson_IdsBeyondModelVocabulary_Throws()
    {
        using var folder = WithTokenizerJson(_ => { });
        LoadFails(folder, "tokenizer.json", "beyond the model's vocabulary of 100", vocabSize: 100);
    }

    [Fact]
    public void TokenizerConfig_NotJson_Throws()
    {
        using var folder = WithTokenizerJson(_ => { });
        folder.Write("tokenizer_config.json", "not json");
        LoadFails(folder, "tokenizer_config.json", "not valid JSON");
    }

    [Fact]
    public void TokenizerConfig_BosNotInVocab_Throws()
    {
        using var folder = WithTokenizerJson(_ => { });
        folder.WriteJson("tokenizer_config.json", new JsonObject { ["bos_token"] = "<|begin_of_text|>" });
        LoadFails(folder, "tokenizer_config.json", "bos_token '<|begin_of_text|>' is not in the vocabulary");
    }

    [Fact]
    public void TokenizerConfig_ClassWithoutItsFiles_Throws()
    {
        using var folder = new TempFolder();
        folder.WriteJson("tokenizer_config.json", new JsonObject { ["tokenizer_class"] = "LlamaTokenizer" });
        LoadFails(folder, "tokenizer_config.json", "tokenizer_class 'LlamaTokenizer' needs");
    }

    [Fact]
    public void MergesTxt_MalformedLine_Throws()
    {
        using var folder = new TempFolder();
        folder.Write("vocab.json", "{\"a\": 0, \"b\": 1, \"ab\": 2}");
        folder.Write("merges.txt", "#version: 0.2\na b\nab\n");
        LoadFails(folder, "merges.txt", "line 3 'ab' is not two tokens");
    }

    [Fact]
    public void MergesTxt_UnknownToken_Throws()
    {
        using var folder = new TempFolder();
        folder.Write("vocab.json", "{\"a\": 0, \"b\": 1, \"ab\": 2}");
        folder.Write("merges.txt", "#version: 0.2\na c\n");
        LoadFails(folder, "merges.txt", "refers to unknown token 'c'");
    }

    [Fact]
    public void VocabJson_NotJson_Throws()
    {
        using var folder = new TempFolder();
        folder.Write("vocab.json", "{\"a\": 0,");
        folder.Write("merges.txt", "#version: 0.2\n");
        LoadFails(folder, "vocab.json", "not valid JSON");
    }

    [Fact]
    public void VocabJson_WithoutMergesTxt_Throws()
    {
        using var folder = new TempFolder();
        folder.Write("vocab.json", "{\"a\": 0}");
        LoadFails(folder, "merges.txt", "is missing");
    }

    [Fact]
    public void TokenizerModel_NotSentencePiece_Throws()
    {
        using var folder = new TempFolder();
        folder.Write("tokenizer.model", "this is not a protobuf \u0001\u0002\u0003");
        LoadFails(folder, "tokenizer.model", "is not a SentencePiece model");
    }

    [Fact]
    public void NoFiles_VocabularyTooSmallForBytes_Throws()
    {
        using var folder = new TempFolder();
        var e = Assert.Throws<TokenizerFormatException>(() => TokenizerLoader.Load(folder.Path, 100));
        Assert.Contains("too small for the byte tokenizer", e.Reason);
    }
}
