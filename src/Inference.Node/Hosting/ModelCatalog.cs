namespace Serving.Inference.Node.Hosting;

/// <summary>How a request's <c>model</c> resolved.</summary>
public enum ModelResolution
{
    /// <summary>The base model (or no model given).</summary>
    Base,

    /// <summary>Neither the base nor <c>base:adapter</c>.</summary>
    UnknownModel,

    /// <summary><c>base:adapter</c> where the adapter is not available on this node.</summary>
    UnknownAdapter,
}

/// <summary>
/// Maps <c>model</c> names to what this node serves: the base id, and (seam for the adapters work)
/// <c>&lt;base&gt;:&lt;adapter&gt;</c>, which today always resolves to <see cref="ModelResolution.UnknownAdapter"/>.
/// </summary>
public sealed class ModelCatalog(ModelHost host)
{
    /// <summary>The base model's id.</summary>
    public string BaseModelId => host.ModelId;

    /// <summary>Resolves <paramref name="model"/>; <paramref name="adapter"/> is the suffix after <c>base:</c>, if any.</summary>
    public ModelResolution Resolve(string? model, out string? adapter)
    {
        adapter = null;
        if (string.IsNullOrEmpty(model) || model == host.ModelId) return ModelResolution.Base;
        if (model.StartsWith(host.ModelId + ":", StringComparison.Ordinal))
        {
            adapter = model[(host.ModelId.Length + 1)..];
            return ModelResolution.UnknownAdapter;
        }
        return ModelResolution.UnknownModel;
    }

    /// <summary>Adapters loaded on this node (none until adapters land).</summary>
    public IReadOnlyList<string> LoadedAdapters => [];
}
