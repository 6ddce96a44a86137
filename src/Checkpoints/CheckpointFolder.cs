using System.Text.Json;

namespace Serving.Checkpoints;

/// <summary>
/// A Hugging Face checkpoint folder: <c>config.json</c> plus one <c>model.safetensors</c> or shards listed in
/// <c>model.safetensors.index.json</c>. Resolves the naming variants real files use (a headless GPT-2 without the
/// <c>transformer.</c> prefix, an LM head stored in place of the tied embedding).
/// </summary>
public sealed class CheckpointFolder : IDisposable
{
    private readonly Dictionary<string, SafetensorsFile> _byTensor = new(StringComparer.Ordinal);
    private readonly List<SafetensorsFile> _files = [];

    private CheckpointFolder(string directory, ModelConfig config)
    {
        Directory = directory;
        Config = config;
    }

    /// <summary>The folder.</summary>
    public string Directory { get; }

    /// <summary>The parsed config.json.</summary>
    public ModelConfig Config { get; }

    /// <summary>Every tensor name in the checkpoint's files.</summary>
    public IEnumerable<string> TensorNames => _byTensor.Keys;

    /// <summary>
    /// Opens a folder, validating config.json and every safetensors header. Files may be symbolic links (the Hugging
    /// Face cache's snapshot folders); a dangling one is a <see cref="DanglingLinkException"/> naming it.
    /// </summary>
    public static CheckpointFolder Open(string directory)
    {
        LinkedFiles.ThrowIfDangling(directory);
        if (!System.IO.Directory.Exists(directory))
        {
            throw new DirectoryNotFoundException($"checkpoint folder '{directory}' does not exist");
        }
        var configPath = Path.Combine(directory, "config.json");
        if (!LinkedFiles.Exists(configPath))
        {
            throw new ModelConfigException($"{directory}: no config.json (a Hugging Face checkpoint folder needs one)");
        }
        var folder = new CheckpointFolder(directory, ModelConfig.Load(configPath));
        try
        {
            foreach (var file in WeightFiles(directory))
            {
                var st = SafetensorsFile.Open(file);
                folder._files.Add(st);
                foreach (var name in st.Tensors.Keys)
                {
                    folder._byTensor[name] = st;
                }
            }
            return folder;
        }
        catch
        {
            folder.Dispose();
            throw;
        }
    }

    /// <summary>True when the checkpoint holds <paramref name="name"/> under any accepted spelling.</summary>
    public bool Contains(string name) => Resolve(name) is not null;

    /// <summary>Reads a float tensor as fp32, checking its shape.</summary>
    public float[] ReadFloat32(string name, params long[] shape)
    {
        var (file, actual) = Resolve(name) ?? throw Missing(name);
        return file.ReadFloat32(actual, shape);
    }

    /// <summary>The header entry of a tensor.</summary>
    public TensorInfo Info(string name)
    {
        var (file, actual) = Resolve(name) ?? throw Missing(name);
        return file.Get(actual);
    }

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
        _files.Clear();
        _byTensor.Clear();
    }

    private SafetensorsFormatException Missing(string name) =>
        new(Directory, name, "missing tensor (not in any safetensors file of the checkpoint)");

    private (SafetensorsFile File, string Name)? Resolve(string name)
    {
        if (_byTensor.TryGetValue(name, out var f)) return (f, name);
        const string gpt2Prefix = "transformer.";
        if (name.StartsWith(gpt2Prefix, StringComparison.Ordinal) && _byTensor.TryGetValue(name[gpt2Prefix.Length..], out f))
        {
            return (f, name[gpt2Prefix.Length..]);
        }
        // Tied weights saved once: either tensor name may be the one present.
        var alias = name switch
        {
            "model.embed_tokens.weight" => "lm_head.weight",
            "lm_head.weight" when Config.TieWordEmbeddings => "model.embed_tokens.weight",
            _ => null,
        };
        return alias is not null && _byTensor.TryGetValue(alias, out f) ? (f, alias) : null;
    }

    private static IEnumerable<string> WeightFiles(string directory)
    {
        var single = Path.Combine(directory, "model.safetensors");
        if (LinkedFiles.Exists(single)) return [single];
        var index = Path.Combine(directory, "model.safetensors.index.json");
        if (LinkedFiles.Exists(index))
        {
            using var doc = JsonDocument.Parse(LinkedFiles.ReadAllText(index));
            if (!doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
            {
                throw new SafetensorsFormatException(index, null, "index has no 'weight_map' object");
            }
            var shards = new SortedSet<string>(StringComparer.Ordinal);
            foreach (var entry in map.EnumerateObject())
            {
                var shard = entry.Value.GetString() ?? "";
                if (shard.Contains('/') || shard.Contains('\\') || shard.Contains(".."))
                {
                    throw new SafetensorsFormatException(index, entry.Name, $"shard name '{shard}' is not a plain file name");
                }
                shards.Add(Path.Combine(directory, shard));
            }
            return shards;
        }
        if (File.Exists(Path.Combine(directory, "pytorch_model.bin")))
        {
            throw new SafetensorsFormatException(directory, null, "only pytorch_model.bin (a pickle) is present; convert the checkpoint to safetensors");
        }
        throw new SafetensorsFormatException(directory, null, "no model.safetensors or model.safetensors.index.json");
    }
}
