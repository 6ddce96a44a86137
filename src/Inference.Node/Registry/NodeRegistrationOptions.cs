using Microsoft.Extensions.Options;

namespace Serving.Inference.Node.Registry;

/// <summary>
/// Joining the gateway's pool through the Redis node registry; bound from the <c>Node</c> section next to
/// <see cref="Hosting.NodeOptions"/>. Without <see cref="Redis"/> the node publishes nothing.
/// </summary>
public sealed class NodeRegistrationOptions
{
    /// <summary>StackExchange.Redis connection string of the registry (e.g. <c>127.0.0.1:6379</c>); empty = no heartbeats.</summary>
    public string? Redis { get; set; }

    /// <summary>Node id in the registry; default <c>{machine}-{port}</c>.</summary>
    public string? Id { get; set; }

    /// <summary>URL the gateway forwards to; default the bound address (a wildcard host becomes the machine name).</summary>
    public string? AdvertisedUrl { get; set; }

    /// <summary>Registry key prefix (the gateway's <c>Gateway:Routing:RegistryPrefix</c>).</summary>
    public string RegistryPrefix { get; set; } = Serving.Contracts.Registry.RegistryKeys.DefaultPrefix;

    /// <summary>Heartbeat period.</summary>
    public TimeSpan HeartbeatInterval { get; set; } = Serving.Contracts.Registry.RegistryKeys.DefaultInterval;

    /// <summary>Heartbeat TTL: a node that stops heartbeating leaves the pool after this.</summary>
    public TimeSpan HeartbeatTtl { get; set; } = Serving.Contracts.Registry.RegistryKeys.DefaultTtl;

    /// <summary>True when a registry is configured.</summary>
    public bool Enabled => !string.IsNullOrWhiteSpace(Redis);
}

/// <summary>Checks <see cref="NodeRegistrationOptions"/> at start.</summary>
internal sealed class NodeRegistrationOptionsValidator : IValidateOptions<NodeRegistrationOptions>
{
    public ValidateOptionsResult Validate(string? name, NodeRegistrationOptions o)
    {
        if (!o.Enabled) return ValidateOptionsResult.Success;
        var errors = new List<string>();
        if (o.Id is not null && (o.Id.Length == 0 || o.Id.Any(c => char.IsWhiteSpace(c) || char.IsControl(c))))
            errors.Add("Node:Id must be non-empty and without whitespace.");
        if (o.AdvertisedUrl is not null && !(Uri.TryCreate(o.AdvertisedUrl, UriKind.Absolute, out var u) && u.Scheme is "http" or "https"))
            errors.Add("Node:AdvertisedUrl must be an absolute http(s) URL.");
        if (string.IsNullOrWhiteSpace(o.RegistryPrefix) || o.RegistryPrefix.IndexOfAny(['{', '}']) >= 0) errors.Add("Node:RegistryPrefix must be non-empty and without braces.");
        if (o.HeartbeatInterval <= TimeSpan.Zero) errors.Add("Node:HeartbeatInterval must be positive.");
        if (o.HeartbeatTtl <= o.HeartbeatInterval) errors.Add("Node:HeartbeatTtl must be longer than Node:HeartbeatInterval.");
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
