namespace Serving.Contracts.Models;

/// <summary>
/// The <c>model</c> field of an OpenAI request: <c>base</c>, <c>base:adapter</c> (the caller's own adapter) or
/// <c>base:tenant/adapter</c> (an explicit owner; only the caller itself or <see cref="PublicTenant"/> is allowed).
/// The gateway forwards the canonical form <c>base</c> or <c>base:tenant/adapter</c> to nodes.
/// </summary>
/// <param name="BaseModel">Base model id.</param>
/// <param name="Tenant">Adapter owner, null when the caller's own is meant (or no adapter).</param>
/// <param name="Adapter">Adapter name, null for the base model alone.</param>
public readonly record struct ModelId(string BaseModel, string? Tenant, string? Adapter)
{
    /// <summary>Owner of adapters every tenant may use.</summary>
    public const string PublicTenant = "public";

    /// <summary>True when an adapter is named.</summary>
    public bool HasAdapter => Adapter is not null;

    /// <summary>Canonical adapter id <c>tenant/name</c> (as nodes report residency), null without an adapter or owner.</summary>
    public string? AdapterKey => Adapter is null || Tenant is null ? null : $"{Tenant}/{Adapter}";

    /// <summary>Parses without validating the characters of the parts; false when a part is empty.</summary>
    public static bool TryParse(string? text, out ModelId id)
    {
        id = default;
        if (string.IsNullOrEmpty(text)) return false;
        int colon = text.IndexOf(':');
        if (colon < 0)
        {
            id = new ModelId(text, null, null);
            return true;
        }
        string baseModel = text[..colon], rest = text[(colon + 1)..];
        if (baseModel.Length == 0 || rest.Length == 0) return false;
        int slash = rest.IndexOf('/');
        if (slash < 0)
        {
            id = new ModelId(baseModel, null, rest);
            return true;
        }
        string tenant = rest[..slash], name = rest[(slash + 1)..];
        if (tenant.Length == 0 || name.Length == 0 || name.Contains('/')) return false;
        id = new ModelId(baseModel, tenant, name);
        return true;
    }

    /// <summary>The same id with the owner filled in.</summary>
    public ModelId WithTenant(string tenant) => this with { Tenant = tenant };

    /// <inheritdoc />
    public override string ToString() =>
        Adapter is null ? BaseModel : Tenant is null ? $"{BaseModel}:{Adapter}" : $"{BaseModel}:{Tenant}/{Adapter}";
}
