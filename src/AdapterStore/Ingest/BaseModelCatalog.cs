using Serving.AdapterStore.Peft;
using Serving.Checkpoints;

namespace Serving.AdapterStore.Ingest;

/// <summary>The base models uploads are validated against, by id.</summary>
public interface IBaseModelCatalog
{
    /// <summary>Id used when an upload names no base model.</summary>
    string DefaultModel { get; }

    /// <summary>Shape of a base model, or false when the id is unknown.</summary>
    bool TryGet(string id, out BaseModelShape shape);

    /// <summary>Known ids.</summary>
    IReadOnlyCollection<string> Ids { get; }

    /// <summary>The config.json of a base model (reward heads are validated against it), false when the catalog has none for it.</summary>
    bool TryGetConfig(string id, out ModelConfig config)
    {
        config = null!;
        return false;
    }
}

/// <summary>A fixed catalog filled at start (from the served checkpoints' config.json files).</summary>
public sealed class StaticBaseModelCatalog : IBaseModelCatalog
{
    private readonly Dictionary<string, BaseModelShape> _models = new(StringComparer.Ordinal);
    private readonly Dictionary<string, ModelConfig> _configs = new(StringComparer.Ordinal);

    /// <summary>Creates a catalog; the first model added becomes the default.</summary>
    public StaticBaseModelCatalog Add(string id, BaseModelShape shape)
    {
        _models[id] = shape;
        if (DefaultModel.Length == 0) DefaultModel = id;
        return this;
    }

    /// <summary>Adds a model described by its config.json (adapters and reward heads can be validated against it).</summary>
    public StaticBaseModelCatalog Add(string id, ModelConfig config)
    {
        _configs[id] = config;
        return Add(id, BaseModelShape.FromConfig(config));
    }

    /// <inheritdoc />
    public string DefaultModel { get; private set; } = "";

    /// <inheritdoc />
    public IReadOnlyCollection<string> Ids => _models.Keys;

    /// <inheritdoc />
    public bool TryGet(string id, out BaseModelShape shape) => _models.TryGetValue(id, out shape!);

    /// <inheritdoc />
    public bool TryGetConfig(string id, out ModelConfig config) => _configs.TryGetValue(id, out config!);
}
