using Microsoft.Extensions.Options;

namespace Serving.Gateway;

/// <summary>Top-level gateway settings; section <c>Gateway</c>.</summary>
public sealed class GatewayOptions
{
    /// <summary>Configuration section.</summary>
    public const string SectionName = "Gateway";

    /// <summary>Base models adapters may be uploaded for: id → path of the model's <c>config.json</c>.</summary>
    public Dictionary<string, string> BaseModels { get; set; } = [];

    /// <summary><c>Retry-After</c> on the gateway's own 503s (store or nodes unavailable); default 2 s.</summary>
    public TimeSpan RetryAfter { get; set; } = TimeSpan.FromSeconds(2);
}

/// <summary>Checks <see cref="GatewayOptions"/> at start.</summary>
internal sealed class GatewayOptionsValidator : IValidateOptions<GatewayOptions>
{
    public ValidateOptionsResult Validate(string? name, GatewayOptions o)
    {
        var errors = new List<string>();
        foreach (var (id, path) in o.BaseModels)
        {
            if (!File.Exists(path)) errors.Add($"Gateway:BaseModels:{id} names '{path}', which does not exist (the model's config.json).");
        }
        if (o.RetryAfter < TimeSpan.FromSeconds(1) || o.RetryAfter > TimeSpan.FromHours(1)) errors.Add("Gateway:RetryAfter must be between 1 s and 1 h.");
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
