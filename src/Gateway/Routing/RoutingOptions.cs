using System.ComponentModel.DataAnnotations;

namespace Serving.Gateway.Routing;

/// <summary>Node registry view and adapter-aware routing; section <c>Gateway:Routing</c>.</summary>
public sealed class RoutingOptions
{
    /// <summary>Configuration section.</summary>
    public const string SectionName = "Gateway:Routing";

    /// <summary>Key prefix of the node registry (<see cref="Contracts.Registry.RegistryKeys"/>).</summary>
    [Required] public string RegistryPrefix { get; set; } = Contracts.Registry.RegistryKeys.DefaultPrefix;

    /// <summary>Period of the full registry read that complements the pub/sub announcements.</summary>
    [Range(typeof(TimeSpan), "00:00:00.050", "00:01:00")] public TimeSpan RefreshInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Residency cost of an adapter in the host cache (device = 0).</summary>
    [Range(0, 100)] public double HostCost { get; set; } = 1;

    /// <summary>Residency cost of an adapter being loaded.</summary>
    [Range(0, 100)] public double LoadingCost { get; set; } = 2;

    /// <summary>Residency cost of an absent adapter.</summary>
    [Range(0, 100)] public double AbsentCost { get; set; } = 4;

    /// <summary>Cost per unit of load, load = (queued + running) / capacity.</summary>
    [Range(0, 100)] public double LoadWeight { get; set; } = 2;

    /// <summary>Cost per unit of KV usage (0..1).</summary>
    [Range(0, 100)] public double KvWeight { get; set; } = 1;

    /// <summary>Capacity assumed for a node that reports no <c>max_running</c>.</summary>
    [Range(1, 100_000)] public int DefaultCapacity { get; set; } = 32;

    /// <summary>Bounded-load factor c for cold adapters: a node takes a cold adapter only while its load ≤ c · mean + 1.</summary>
    [Range(1.0, 10.0)] public double BoundedLoadFactor { get; set; } = 1.25;

    /// <summary>Largest request body read to find <c>model</c> (413 past it).</summary>
    [Range(1024, 64L << 20)] public long MaxRequestBodyBytes { get; set; } = 4L << 20;

    /// <summary>Path of the node readiness endpoint polled by the active health check.</summary>
    [Required] public string HealthPath { get; set; } = "/health/ready";

    /// <summary>Active health probe period (zero disables active probes).</summary>
    public TimeSpan HealthInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>YARP activity timeout: the longest silence of a node before the request fails.</summary>
    public TimeSpan ActivityTimeout { get; set; } = TimeSpan.FromSeconds(120);

    /// <summary>
    /// After the registry was unreachable, how long full reads only add and refresh nodes and never drop one: a Redis
    /// restarted without persistence is empty until every node has beaten again (node heartbeat interval, 2 s by
    /// default), and dropping the whole view in between would answer 503 to every request. Nodes that do not beat
    /// again within it are dropped by the first full read after it.
    /// </summary>
    public TimeSpan RecoveryGrace { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>How long a looked-up adapter stays cached (also served stale while the store is unreachable).</summary>
    public TimeSpan AdapterCacheTtl { get; set; } = TimeSpan.FromSeconds(5);
}
