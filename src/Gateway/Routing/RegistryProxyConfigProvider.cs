using Microsoft.Extensions.Options;
using Microsoft.Extensions.Primitives;
using Serving.Gateway.RateLimiting;
using Serving.Gateway.Tenancy;
using Yarp.ReverseProxy.Configuration;
using Yarp.ReverseProxy.Forwarder;

namespace Serving.Gateway.Routing;

/// <summary>
/// YARP configuration from the node registry: the OpenAI routes, and one cluster whose destinations are the live nodes
/// (destination id = node id). A new snapshot is published only when the destination set changes; load and residency
/// are read live by <see cref="AdapterAffinityPolicy"/>.
/// </summary>
internal sealed class RegistryProxyConfigProvider : IProxyConfigProvider
{
    /// <summary>vLLM's tokenizer routes: forwarded like the OpenAI routes, but they generate nothing.</summary>
    public static readonly string[] TokenizerPaths = ["/tokenize", "/detokenize"];

    /// <summary>Paths forwarded to nodes.</summary>
    public static readonly string[] ForwardedPaths = ["/v1/chat/completions", "/v1/completions", .. TokenizerPaths];

    private readonly RoutingOptions _options;
    private volatile Snapshot _snapshot;

    public RegistryProxyConfigProvider(INodeView view, IOptions<RoutingOptions> options)
    {
        _options = options.Value;
        _snapshot = Build(view.Current);
        view.DestinationsChanged += snapshot =>
        {
            var old = _snapshot;
            _snapshot = Build(snapshot);
            old.Signal();
        };
    }

    public IProxyConfig GetConfig() => _snapshot;

    private Snapshot Build(NodeSnapshot nodes)
    {
        var routes = ForwardedPaths.Select((path, i) => new RouteConfig
        {
            RouteId = "openai-" + i,
            ClusterId = RoutingPolicies.NodesCluster,
            Match = new RouteMatch { Path = path, Methods = ["POST"] },
            AuthorizationPolicy = TenancyPolicies.Tenant,
            RateLimiterPolicy = RateLimitPolicies.TenantRequests,
        }).ToList();

        var destinations = nodes.Nodes.Values
            .Where(n => n.Heartbeat.Ready)
            .ToDictionary(n => n.Id, n => new DestinationConfig { Address = n.Heartbeat.BaseUrl }, StringComparer.Ordinal);

        var cluster = new ClusterConfig
        {
            ClusterId = RoutingPolicies.NodesCluster,
            LoadBalancingPolicy = RoutingPolicies.AdapterAffinity,
            Destinations = destinations,
            HttpRequest = new ForwarderRequestConfig { ActivityTimeout = _options.ActivityTimeout },
            HealthCheck = new HealthCheckConfig
            {
                Passive = new PassiveHealthCheckConfig { Enabled = true, ReactivationPeriod = TimeSpan.FromSeconds(10) },
                Active = _options.HealthInterval > TimeSpan.Zero
                    ? new ActiveHealthCheckConfig { Enabled = true, Interval = _options.HealthInterval, Timeout = TimeSpan.FromSeconds(2), Path = _options.HealthPath, Policy = "ConsecutiveFailures" }
                    : null,
            },
        };
        return new Snapshot(routes, [cluster]);
    }

    private sealed class Snapshot : IProxyConfig
    {
        private readonly CancellationTokenSource _changed = new();

        public Snapshot(IReadOnlyList<RouteConfig> routes, IReadOnlyList<ClusterConfig> clusters)
        {
            Routes = routes;
            Clusters = clusters;
            ChangeToken = new CancellationChangeToken(_changed.Token);
        }

        public IReadOnlyList<RouteConfig> Routes { get; }

        public IReadOnlyList<ClusterConfig> Clusters { get; }

        public IChangeToken ChangeToken { get; }

        public void Signal() => _changed.Cancel();
    }
}
