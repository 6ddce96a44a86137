using Serving.Inference.Node.Adapters;

namespace Serving.Inference.Node.Hosting;

/// <summary>How a request's <c>model</c> resolved.</summary>
public enum ModelResolution
{
    /// <summary>The base model (or no model given).</summary>
    Base,

    /// <summary>Neither the base nor <c>base:adapter</c>, and the node serves no adapters.</summary>
    UnknownModel,

    /// <summary><c>base:tenant/name</c> or <c>base:name</c>: resolved by the <see cref="AdapterManager"/>.</summary>
    Adapter,

    /// <summary>Another name: an adapter alone, resolved by the <see cref="AdapterManager"/> when unambiguous.</summary>
    BareAdapter,
}

/// <summary>Maps <c>model</c> names to what this node serves: the base id, <c>&lt;base&gt;:&lt;adapter&gt;</c>, or an adapter alone.</summary>
public sealed class ModelCatalog(ModelHost host, AdapterManager adapters)
{
    /// <summary>The base model's id.</summary>
    public string BaseModelId => host.ModelId;

    /// <summary>Resolves <paramref name="model"/>; <paramref name="adapter"/> is the adapter part (after <c>base:</c>, or the whole name).</summary>
    public ModelResolution Resolve(string? model, out string? adapter)
    {
        adapter = null;
        if (string.IsNullOrEmpty(model) || model == host.ModelId) return ModelResolution.Base;
        if (model.StartsWith(host.ModelId + ":", StringComparison.Ordinal))
        {
            adapter = model[(host.ModelId.Length + 1)..];
            return ModelResolution.Adapter;
        }
        if (adapters.Enabled && !model.Contains(':'))
        {
            adapter = model;
            return ModelResolution.BareAdapter;
        }
        return ModelResolution.UnknownModel;
    }

    /// <summary>Adapters in device slots (canonical ids <c>tenant/name</c>).</summary>
    public IReadOnlyList<string> LoadedAdapters => adapters.Snapshot().Device;
}
