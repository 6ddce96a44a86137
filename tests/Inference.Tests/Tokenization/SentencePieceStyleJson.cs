using System.Text.Json.Nodes;

namespace Serving.Inference.Tests.Tokenization;

/// <summary>
/// A small hand-built Llama-2-style <c>tokenizer.json</c>: ▁ normaliser, byte fallback, Replace/ByteFallback/Fuse/Strip decoder.
/// Ids: &lt;unk&gt; 0, &lt;s&gt; 1, &lt;/s&gt; 2, &lt;0x00&gt;..&lt;0xFF&gt; 3..258 (byte b → 3 + b), then the pieces below.
/// </summary>
public static class SentencePieceStyleJson
{
    public const int Unk = 0, Bos = 1, Eos = 2;
    public const int Space = 259, H = 260, E = 261, L = 262, O = 263, W = 264, R = 265, D = 266;
    public const int LL = 267, SpaceH = 268, SpaceHe = 269, Llo = 270, SpaceHello = 271, SpaceW = 272, Or = 273;

    public static int Byte(int b) => 3 + b;

    // Merge ranks: 0 "l l", 1 "▁ h", 2 "▁h e", 3 "ll o", 4 "▁he llo", 5 "▁ w", 6 "o r".
    public static readonly (string, string)[] Merges =
        [("l", "l"), ("▁", "h"), ("▁h", "e"), ("ll", "o"), ("▁he", "llo"), ("▁", "w"), ("o", "r")];

    public static JsonObject Build(bool pairMerges = false, bool byteFallback = true, string? unkToken = "<unk>", bool fuseUnk = false)
    {
        var vocab = new JsonObject { ["<unk>"] = Unk, ["<s>"] = Bos, ["</s>"] = Eos };
        for (int b = 0; b < 256; b++) vocab[$"<0x{b:X2}>"] = Byte(b);
        string[] pieces = ["▁", "h", "e", "l", "o", "w", "r", "d", "ll", "▁h", "▁he", "llo", "▁hello", "▁w", "or"];
        for (int i = 0; i < pieces.Length; i++) vocab[pieces[i]] = Space + i;

        var merges = new JsonArray();
        foreach (var (a, b) in Merges) merges.Add(pairMerges ? new JsonArray(a, b) : JsonValue.Create(a + " " + b));

        JsonObject Added(int id, string content) => new()
        {
            ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
            ["normalized"] = false, ["special"] = true,
        };

        return new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(Added(Unk, "<unk>"), Added(Bos, "<s>"), Added(Eos, "</s>")),
            ["normalizer"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["normalizers"] = new JsonArray(
                    new JsonObject { ["type"] = "Prepend", ["prepend"] = "▁" },
                    new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = " " }, ["content"] = "▁" }),
            },
            ["pre_tokenizer"] = null,
            ["post_processor"] = new JsonObject
            {
                ["type"] = "TemplateProcessing",
                ["single"] = new JsonArray(
                    new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = "<s>", ["type_id"] = 0 } },
                    new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } }),
            },
            ["decoder"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["decoders"] = new JsonArray(
                    new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = "▁" }, ["content"] = " " },
                    new JsonObject { ["type"] = "ByteFallback" },
                    new JsonObject { ["type"] = "Fuse" },
                    new JsonObject { ["type"] = "Strip", ["content"] = " ", ["start"] = 1, ["stop"] = 0 }),
            },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = unkToken, ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null, ["fuse_unk"] = fuseUnk, ["byte_fallback"] = byteFallback, ["ignore_merges"] = false,
                ["vocab"] = vocab, ["merges"] = merges,
            },
        };
    }

    public static JsonObject Config() => new()
    {
        ["tokenizer_class"] = "LlamaTokenizer",
        ["add_bos_token"] = true,
        ["add_eos_token"] = false,
        ["bos_token"] = new JsonObject { ["__type"] = "AddedToken", ["content"] = "<s>", ["lstrip"] = false },
        ["eos_token"] = "</s>",
        ["unk_token"] = "<unk>",
    };
}
