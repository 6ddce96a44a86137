namespace Serving.Gateway;

/// <summary>Top-level gateway settings; section <c>Gateway</c>.</summary>
public sealed class GatewayOptions
{
    /// <summary>Configuration section.</summary>
    public const string SectionName = "Gateway";

    /// <summary>Base models adapters may be uploaded for: id → path of the model's <c>config.json</c>.</summary>
    public Dictionary<string, string> BaseModels { get; set; } = [];
}
