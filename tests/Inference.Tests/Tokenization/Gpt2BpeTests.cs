using Xunit;
using System.Text;
using Serving.Inference.Tokenization;

namespace Serving.Inference.Tests.Tokenization;

/// <summary>GPT-2 BPE (three file layouts) against tiktoken's GPT-2 data as the independent reference.</summary>
public sealed class Gpt2BpeTests(Gpt2Reference reference) : IClassFixture<Gpt2Reference>
{
    public static readonly TheoryData<string> Layouts = ["vocab+merges", "tokenizer.json", "tokenizer.json-pairs"];

    public static readonly string[] Corpus =
    [
        "Hello world",
        "Hello, world! How are you doing today?",
        "The quick brown fox jumps over the lazy dog.",
        "I'm sure they've said we'll go, isn't it? He'd know. You're right.",
        "public static int Main(string[] args) {\n    return args.Length > 0 ? 1 : 0;\n}\n",
        "def f(x):\n\tif x:\n\t\treturn [i**2 for i in range(10)]  # squares\n",
        "3.14159 2026-11-27 1,234,567.89 0x1F 42nd 100% $5.99",
        "   leading spaces and trailing   ",
        "tabs\t\tand\nnew\n\n\nlines\r\n  \n",
        "a    b     c      d",
        "emoji 👍🏽 🎉 😀😀 ❤️ 🇫🇷",
        "中文分词测试，日本語のテキスト、한국어 텍스트",
        "Café naïve résumé façade Ångström Straße œuvre",
        "Ελληνικά Русский текст עברית العربية हिन्दी",
        "<html><body class=\"x\">&amp; &lt;tag&gt;</body></html>",
        "!!!??? ... --- *** ### @@@ ~~~ ```code```",
        "",
        " ",
        "\n",
        "supercalifragilisticexpialidocious antidisestablishmentarianism",
        "don't DON'T Don't 's 'll 'LL",
        "x\u00a0y\u2003z\u200bw",
        "\ud83d\ude00 surrogate pair written as escapes",
    ];

    [Theory]
    [MemberData(nameof(Layouts))]
    public void Encode_KnownPairs_MatchGpt2(string layout)
    {
        var tok = reference.Load(layout);
        Assert.Equal([15496, 995], tok.Encode("Hello world"));
        Assert.Equal([15496, 11, 995, 0], tok.Encode("Hello, world!"));
        Assert.Equal([50256], tok.Encode("<|endoftext|>"));
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void Encode_VariedCorpus_MatchesTiktoken(string layout)
    {
        var tok = reference.Load(layout);
        foreach (string text in Corpus)
        {
            int[] expected = reference.Tiktoken.EncodeToIds(text).ToArray();
            Assert.True(expected.SequenceEqual(tok.Encode(text)), $"{layout}: '{text}'\nexpected {string.Join(",", expected)}\nactual   {string.Join(",", tok.Encode(text))}");
        }
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void Encode_RandomStrings_MatchesTiktoken(string layout)
    {
        var tok = reference.Load(layout);
        var random = new Random(1234);
        string[] alphabet =
        [
            "a", "b", "e", "t", "h", "o", "n", " ", " ", " ", "  ", "\n", "\t", "'", "s", "ll", "'ve", "0", "7", "42", ".", ",", "!", "?",
            "(", ")", "{", "}", "_", "-", "é", "ü", "ß", "ñ", "中", "文", "日", "本", "한", "👍", "🏽", "😀", "€", "\u00a0", "A", "Z", "THE",
        ];
        for (int n = 0; n < 300; n++)
        {
            var sb = new StringBuilder();
            int len = random.Next(1, 40);
            for (int i = 0; i < len; i++) sb.Append(alphabet[random.Next(alphabet.Length)]);
            string text = sb.ToString();
            int[] expected = reference.Tiktoken.EncodeToIds(text).ToArray();
            int[] actual = tok.Encode(text);
            Assert.True(expected.SequenceEqual(actual), $"{layout}: '{text}'\nexpected {string.Join(",", expected)}\nactual   {string.Join(",", actual)}");
        }
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void Decode_OfEncode_ReturnsTheText(string layout)
    {
        var tok = reference.Load(layout);
        foreach (string text in Corpus)
            Assert.Equal(text, tok.Decode(tok.Encode(text)));
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void Encode_SpecialTokenInText_BecomesSpecialId(string layout)
    {
        var tok = reference.Load(layout);
        int[] ids = tok.Encode("Hi<|endoftext|> there");
        Assert.Equal([17250, 50256, 612], ids);
        Assert.Equal("Hi<|endoftext|> there", tok.Decode(ids));
        Assert.Equal("Hi there", tok.Decode(ids, skipSpecialTokens: true));
        Assert.Equal(50256, tok.SpecialTokens["<|endoftext|>"]);
        Assert.Equal(50256, tok.EosTokenId);
        Assert.Equal(50256, tok.BosTokenId);
        Assert.False(tok.AddBosByDefault);
        Assert.Equal(50257, tok.VocabSize);
        Assert.Equal([50256, 15496], tok.Encode("Hello", addBos: true));
    }

    [Fact]
    public void Load_TokenizerJsonAndGpt2FilesBothPresent_PrefersTokenizerJson()
    {
        using var folder = new TempFolder();
        File.Copy(reference.Gpt2Files.File("vocab.json"), folder.File("vocab.json"));
        File.Copy(reference.Gpt2Files.File("merges.txt"), folder.File("merges.txt"));
        Assert.Equal(TokenizerNames.Gpt2Bpe, TokenizerLoader.Load(folder.Path, 50257).Name);
        File.Copy(reference.TokenizerJsonStrings.File("tokenizer.json"), folder.File("tokenizer.json"));
        Assert.Equal(TokenizerNames.HfBpe, TokenizerLoader.Load(folder.Path, 50257).Name);
    }

    [Fact]
    public void Reference_DerivedMerges_HaveGpt2sCountAndFirstMerges()
    {
        // GPT-2's merges.txt has 50,000 merges starting "Ġ t", "Ġ a", "h e".
        Assert.Equal(50000, reference.Merges.Count);
        Assert.Equal(("Ġ", "t"), reference.Merges[0]);
        Assert.Equal(("Ġ", "a"), reference.Merges[1]);
        Assert.Equal(("h", "e"), reference.Merges[2]);
    }
}
