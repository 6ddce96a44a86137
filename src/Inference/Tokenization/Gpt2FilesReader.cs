using System.Text.Json;

namespace Serving.Inference.Tokenization;

/// <summary>The original GPT-2 layout: <c>vocab.json</c> (byte-level token → id) and <c>merges.txt</c> (one "a b" merge per line, rank = line order).</summary>
internal static class Gpt2FilesReader
{
    public static BpeTokenizer Read(string directory, TokenizerConfig config)
    {
        string vocabPath = Path.Combine(directory, "vocab.json");
        string mergesPath = Path.Combine(directory, "merges.txt");

        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        using (var doc = JsonUtil.Parse(vocabPath))
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new TokenizerFormatException(vocabPath, "top level must be an object of token → id");
            foreach (var entry in doc.RootElement.EnumerateObject())
            {
                if (entry.Value.ValueKind != JsonValueKind.Number || !entry.Value.TryGetInt32(out int id) || id < 0)
                    throw new TokenizerFormatException(vocabPath, $"id of '{entry.Name}' is not a non-negative integer");
                vocab[entry.Name] = id;
            }
        }

        var merges = new List<(string, string)>();
        string[] lines;
        try
        {
            lines = File.ReadAllLines(mergesPath);
        }
        catch (IOException e)
        {
            throw new TokenizerFormatException(mergesPath, $"cannot be read: {e.Message}", e);
        }
        for (int i = 0; i < lines.Length; i++)
        {
            string line = lines[i].TrimEnd('\r');
            if (line.Length == 0 || (i == 0 && line.StartsWith("#version", StringComparison.Ordinal))) continue;
            if (!BpeMerges.TryParseLine(line, out var pair))
                throw new TokenizerFormatException(mergesPath, $"line {i + 1} '{line}' is not two tokens separated by one space");
            merges.Add(pair);
        }

        var bpe = new BpeModel(vocab, BpeMerges.Build(merges, vocab, null, mergesPath));

        var added = new List<AddedToken>(config.AddedTokens);
        var declared = new HashSet<string>(config.DeclaredSpecialTokens(), StringComparer.Ordinal) { "<|endoftext|>" };
        foreach (var name in declared)
            if (vocab.TryGetValue(name, out int id) && !added.Exists(a => a.Id == id)) added.Add(new AddedToken(name, id, Special: true));

        var (tokens, special) = TokenTable.Build(vocab, added, declared);
        int vocabSize = tokens.Length;
        var decoder = DecoderSpec.ByteLevel();
        var table = decoder.BuildTable(tokens, special);

        int? Lookup(string s) => added.Find(a => a.Content == s)?.Id ?? (vocab.TryGetValue(s, out int id) ? id : null);
        int? endOfText = Lookup("<|endoftext|>");
        var specials = config.Resolve(directory, Lookup, endOfText, endOfText, fallbackAddBos: false);
        var addedWithFlags = added.Select(t => t with { Special = special[t.Id] }).ToList();
        return new BpeTokenizer(TokenizerNames.Gpt2Bpe, bpe, normalizer: null,
            new PreTokenizer.ByteLevelPreTokenizer(addPrefixSpace: false, useRegex: true), addedWithFlags, table, vocabSize, specials);
    }
}
