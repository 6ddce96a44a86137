using System.Text.Json;
using Serving.Inference.Tokenization;

namespace Serving.AdapterQuality;

/// <summary>
/// One split of <c>models/demo/eval</c> (one JSON document per line), rendered and tokenised as the forge does
/// (models/demo/eval/README.md, "Rendering rule"): plain <c>&lt;|endoftext|&gt;</c> + text, or the chat exchange.
/// </summary>
internal sealed class EvalSplit
{
    private EvalSplit(string name, IReadOnlyList<int[]> documents)
    {
        Name = name;
        Documents = documents;
    }

    /// <summary>File name without <c>.jsonl</c>.</summary>
    public string Name { get; }

    /// <summary>Token ids per document, the leading <c>&lt;|endoftext|&gt;</c> included.</summary>
    public IReadOnlyList<int[]> Documents { get; }

    /// <summary>Σ document lengths.</summary>
    public long Tokens => Documents.Sum(d => (long)d.Length);

    /// <summary>Reads <paramref name="path"/>; every document's length is checked against its <c>n_tokens</c>.</summary>
    public static EvalSplit Load(string path, ITokenizer tokenizer, int everyNth = 1)
    {
        var docs = new List<int[]>();
        int line = 0;
        foreach (var text in File.ReadLines(path))
        {
            if (text.Length == 0) continue;
            if (line++ % everyNth != 0) continue;
            using var json = JsonDocument.Parse(text);
            var root = json.RootElement;
            string rendered = root.GetProperty("chat").GetBoolean()
                ? "<|endoftext|><|user|>" + root.GetProperty("prompt").GetString() + "<|end|><|assistant|>" + root.GetProperty("response").GetString() + "<|end|>"
                : "<|endoftext|>" + root.GetProperty("text").GetString();
            var ids = tokenizer.Encode(rendered);
            int expected = root.GetProperty("n_tokens").GetInt32();
            if (ids.Length != expected) throw new InvalidDataException($"{path}:{line}: {ids.Length} tokens, the export says {expected}");
            docs.Add(ids);
        }
        return new EvalSplit(Path.GetFileNameWithoutExtension(path), docs);
    }
}
