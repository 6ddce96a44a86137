using Microsoft.Extensions.Options;
using Serving.Contracts.Registry;
using Serving.ServiceDefaults;

namespace Serving.Gateway.Routing;

/// <summary>Node registry view and adapter-aware routing; section <c>Gateway:Routing</c>.</summary>
public sealed class RoutingOptions
{
    /// <summary>Configuration section.</summary>
    public const string SectionName = "Gateway:Routing";

    /// <summary>Key prefix of the node registry (<see cref="RegistryKeys"/>); default <see cref="RegistryKeys.DefaultPrefix"/>.</summary>
    public string RegistryPrefix { get; set; } = RegistryKeys.DefaultPrefix;

    /// <summary>
    /// The credential sent to nodes in <c>X-Serving-Gateway-Key</c> (the nodes' <c>Node:GatewayKey</c>, from a Secret);
    /// empty (the default): none is sent. At least 16 characters.
    /// </summary>
    public string? NodeKey { get; set; }

    /// <summary>Period of the full registry read that complements the pub/sub announcements; 50 ms–1 min, default 1 s.</summary>
    public TimeSpan RefreshInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Residency cost of an adapter in the host cache (device = 0); 0–100, default 1.</summary>
    public double HostCost { get; set; } = 1;

    /// <summary>Residency cost of an adapter being loaded; 0–100, default 2.</summary>
    public double LoadingCost { get; set; } = 2;

    /// <summary>Residency cost of an absent adapter; 0–100, default 4.</summary>
    public double AbsentCost { get; set; } = 4;

    /// <summary>Cost per unit of load, load = (queued + running) / capacity; 0–100, default 2.</summary>
    public double LoadWeight { get; set; } = 2;

    /// <summary>Cost per unit of KV usage (0..1); 0–100, default 1.</summary>
    public double KvWeight { get; set; } = 1;

    /// <summary>Capacity assumed for a node that reports no <c>max_running</c>; 1–100 000, default 32.</summary>
    public int DefaultCapacity { get; set; } = 32;

    /// <summary>Bounded-load factor c for cold adapters: a node takes a cold adapter only while its load ≤ c · mean + 1; 1–10, default 1.25.</summary>
    public double BoundedLoadFactor { get; set; } = 1.25;

    /// <summary>Largest request body read to find <c>model</c> (413 past it); 1 KiB–64 MiB, default 4 MiB.</summary>
    public long MaxRequestBodyBytes { get; set; } = 4L << 20;

    /// <summary>
    /// Whether the nodes' internal response headers (<c>X-Serving-Node</c>, which names the node that served the request)
    /// reach clients (<c>X-Serving-Adapter</c> and <c>X-Serving-Reward-Head</c> always do). Off by default, so clients learn nothing of the cluster's layout; on for
    /// debugging and for the system tests, which tell requests' nodes by it.
    /// </summary>
    public bool ExposeInternalHeaders { get; set; }

    /// <summary>
    /// Whether the gateway refuses a request itself (429 <c>rate_limit_exceeded</c>, <c>Retry-After</c>) when every node
    /// serving its model already has <c>max_running + max_queue</c> requests in flight from this gateway
    /// (<see cref="NodeAdmission"/>), instead of forwarding it for the node to refuse; default true.
    /// </summary>
    public bool ShedAtNodeLimit { get; set; } = true;

    /// <summary>Path of the node readiness endpoint polled by the active health check; default the nodes' <see cref="HealthEndpoints.ReadyPath"/>.</summary>
    public string HealthPath { get; set; } = HealthEndpoints.ReadyPath;

    /// <summary>Active health probe period (zero disables active probes); default 5 s.</summary>
    public TimeSpan HealthInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>YARP activity timeout: the longest silence of a node before the request fails; default 2 min.</summary>
    public TimeSpan ActivityTimeout { get; set; } = TimeSpan.FromSeconds(120);

    /// <summary>
    /// After the registry was unreachable, how long full reads only add and refresh nodes and never drop one: a Redis
    /// restarted without persistence is empty until every node has beaten again (node heartbeat interval, 2 s by
    /// default), and dropping the whole view in between would answer 503 to every request. Nodes that do not beat
    /// again within it are dropped by the first full read after it. Default 10 s.
    /// </summary>
    public TimeSpan RecoveryGrace { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>How long a looked-up adapter stays cached (also served stale while the store is unreachable); default 5 s.</summary>
    public TimeSpan AdapterCacheTtl { get; set; } = TimeSpan.FromSeconds(5);
}

/// <summary>Checks <see cref="RoutingOptions"/> at start.</summary>
internal sealed class RoutingOptionsValidator : IValidateOptions<RoutingOptions>
{
    public ValidateOptionsResult Validate(string? name, RoutingOptions o)
    {
        var errors = new List<string>();
        const string S = RoutingOptions.SectionName;
        if (string.IsNullOrWhiteSpace(o.RegistryPrefix) || o.RegistryPrefix.IndexOfAny(['{', '}']) >= 0) errors.Add($"{S}:RegistryPrefix must be non-empty and without braces.");
        if (!string.IsNullOrEmpty(o.NodeKey) && o.NodeKey.Length < Serving.Contracts.Security.GatewayCredential.MinLength)
            errors.Add($"{S}:NodeKey must be at least {Serving.Contracts.Security.GatewayCredential.MinLength} characters.");
        if (o.RefreshInterval < TimeSpan.FromMilliseconds(50) || o.RefreshInterval > TimeSpan.FromMinutes(1)) errors.Add($"{S}:RefreshInterval must be between 50 ms and 1 min.");
        foreach (var (key, value) in new[] { ("HostCost", o.HostCost), ("LoadingCost", o.LoadingCost), ("AbsentCost", o.AbsentCost), ("LoadWeight", o.LoadWeight), ("KvWeight", o.KvWeight) })
        {
            if (!(value is >= 0 and <= 100)) errors.Add($"{S}:{key} must be in [0, 100].");
        }
        if (o.DefaultCapacity is < 1 or > 100_000) errors.Add($"{S}:DefaultCapacity must be in [1, 100000].");
        if (!(o.BoundedLoadFactor is >= 1 and <= 10)) errors.Add($"{S}:BoundedLoadFactor must be in [1, 10].");
        if (o.MaxRequestBodyBytes is < 1024 or > 64L << 20) errors.Add($"{S}:MaxRequestBodyBytes must be between 1 KiB and 64 MiB.");
        if (string.IsNullOrWhiteSpace(o.HealthPath) || !o.HealthPath.StartsWith('/')) errors.Add($"{S}:HealthPath must be a path starting with '/'.");
        if (o.HealthInterval < TimeSpan.Zero) errors.Add($"{S}:HealthInterval must not be negative (zero disables active probes).");
        if (o.ActivityTimeout <= TimeSpan.Zero) errors.Add($"{S}:ActivityTimeout must be positive.");
        if (o.RecoveryGrace < TimeSpan.Zero) errors.Add($"{S}:RecoveryGrace must not be negative.");
        if (o.AdapterCacheTtl < TimeSpan.Zero) errors.Add($"{S}:AdapterCacheTtl must not be negative.");
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
