using System.Globalization;
using System.Net.Http.Headers;
using Serving.AdapterStore.Storage;
using Serving.Tests.Shared;

namespace Serving.System.Tests.Infrastructure;

/// <summary>
/// The multi-process topology of <c>deploy/local/run.sh</c> on loopback: a real redis-server, the built gateway and two
/// built inference nodes (demo model) publishing heartbeats. Every process is killed on dispose.
/// </summary>
public sealed class Cluster : IDisposable
{
    public const string TenantKey = "sk-system-tests-tenant";
    public const string AdminKey = "sk-system-tests-admin";

    /// <summary>Keys of tenants allowed one request per minute (the conformance suites' 429), one per suite.</summary>
    public static readonly string[] LimitedKeys = ["sk-system-tests-limited-node", "sk-system-tests-limited-dotnet"];
    public const string Tenant = "tenant-s";
    public const string Model = "demo";

    private readonly List<ServiceProcess> _processes = [];

    private Cluster(RedisServer redis) => Redis = redis;

    public RedisServer Redis { get; }
    public ServiceProcess Gateway { get; private set; } = null!;
    public string GatewayUrl { get; private set; } = "";
    public ServiceProcess[] Nodes { get; private set; } = [];
    public string[] NodeUrls { get; private set; } = [];

    /// <summary>
    /// The nodes' heartbeat TTL (they beat every 0.5 s): long enough that a live node on a machine loaded far beyond its
    /// cores (load average 45 on 2 cores in the flake hunt) never misses it, short enough that a killed node leaves soon.
    /// </summary>
    public const string HeartbeatTtl = "00:00:06";

    public static async Task<Cluster> StartAsync(int nodes = 2)
    {
        var cluster = new Cluster(new RedisServer());
        try
        {
            await cluster.LaunchAsync(nodes);
            return cluster;
        }
        catch
        {
            cluster.Dispose();
            throw;
        }
    }

    private async Task LaunchAsync(int count)
    {
        int gatewayPort = EmbeddedGarnet.FreePort();
        GatewayUrl = $"http://127.0.0.1:{gatewayPort}";
        Gateway = Track(ServiceProcess.Start("gateway", Paths.Gateway,
            "--urls", GatewayUrl,
            "--AdapterStore:RedisConnectionString", Redis.ConnectionString,
            "--Gateway:BaseModels:" + Model, Path.Combine(Paths.DemoModel, "config.json"),
            "--Gateway:Routing:RefreshInterval", "00:00:00.200",
            "--Gateway:Routing:AdapterCacheTtl", "00:00:00.200",
            "--Gateway:Routing:HealthInterval", "00:00:01",
            "--Gateway:Routing:ExposeInternalHeaders", "true", // the tests tell requests' nodes by X-Serving-Node
            "--Gateway:Tenancy:StaticKeys:0:Key", TenantKey, "--Gateway:Tenancy:StaticKeys:0:Tenant", Tenant,
            "--Gateway:Tenancy:StaticKeys:1:Key", AdminKey, "--Gateway:Tenancy:StaticKeys:1:Role", "admin",
            "--Gateway:Tenancy:StaticKeys:2:Key", LimitedKeys[0], "--Gateway:Tenancy:StaticKeys:2:Tenant", "limited-node",
            "--Gateway:Tenancy:StaticKeys:3:Key", LimitedKeys[1], "--Gateway:Tenancy:StaticKeys:3:Tenant", "limited-dotnet",
            "--Gateway:RateLimits:Tenants:limited-node:RequestsPerMinute", "1", "--Gateway:RateLimits:Tenants:limited-dotnet:RequestsPerMinute", "1",
            "--Gateway:RateLimits:RequestsPerMinute", "100000", "--Gateway:RateLimits:TokensPerMinute", "100000000",
            "--Gateway:Resilience:StreamIdleTimeout", "00:00:05",
            "--Logging:LogLevel:Default", "Warning"));

        Nodes = new ServiceProcess[count];
        NodeUrls = new string[count];
        for (int i = 0; i < count; i++) StartNode(i);
        await WaitForNodesAsync(count);
    }

    /// <summary>
    /// Starts node <paramref name="i"/> on a free port. A port found free can be taken by another test process before
    /// the node binds it (test assemblies run in parallel): <see cref="WaitForNodesAsync"/> restarts such a node on a
    /// new port.
    /// </summary>
    private void StartNode(int i)
    {
        {
            int port = EmbeddedGarnet.FreePort();
            NodeUrls[i] = $"http://127.0.0.1:{port}";
            Nodes[i] = Track(ServiceProcess.Start($"node-{i + 1}", Paths.Node,
                "--Node:ModelPath", Paths.DemoModel,
                "--Node:Port", port.ToString(CultureInfo.InvariantCulture),
                "--Node:Threads", "1",
                "--Node:ShutdownDrain", "00:00:02",
                "--Node:Redis", Redis.ConnectionString,
                "--Node:Id", $"node-{i + 1}",
                "--Node:HeartbeatInterval", "00:00:00.500",
                "--Node:HeartbeatTtl", HeartbeatTtl,
                "--Logging:LogLevel:Default", "Warning",
                // One line per request a node receives (before any endpoint code): the tests count them.
                "--Logging:LogLevel:Microsoft.AspNetCore.Hosting.Diagnostics", "Information",
                // Refused requests, with their X-Request-Id (the conformance tests find the client's id in the node's log).
                "--Logging:LogLevel:Serving.Inference.Node.Hosting.NodeExceptionHandler", "Information"));
        }
    }

    /// <summary>Restarts (on a new port) a node that exited because its port was taken before it could bind it; bounded.</summary>
    private void RestartNodesThatLostTheirPort()
    {
        for (int i = 0; i < Nodes.Length; i++)
        {
            if (Nodes[i] is not { HasExited: true } node || !node.Tail().Contains("BindEndpointAsync", StringComparison.Ordinal)) continue;
            if (++_portRestarts > 3) throw new InvalidOperationException($"node-{i + 1} lost its port again:\n{node.Tail()}");
            StartNode(i);
        }
    }

    private int _portRestarts;

    private ServiceProcess Track(ServiceProcess p)
    {
        _processes.Add(p);
        return p;
    }

    /// <summary>
    /// Until the gateway's view holds <paramref name="count"/> nodes and the proxy may route to all of them (its
    /// <c>serving_gateway_nodes</c> and <c>serving_gateway_nodes_healthy</c> gauges), bounded. A node whose first health probe timed
    /// out while it warmed up stays out of routing until a later probe passes.
    /// </summary>
    /// <summary>
    /// How long processes may take to start and join (a bound that detects a broken start, not a speed claim: three
    /// .NET processes loading a model on a 2-core machine running other suites can take minutes).
    /// </summary>
    public static readonly TimeSpan StartupBound = TimeSpan.FromSeconds(180);

    public async Task WaitForNodesAsync(int count, TimeSpan? timeout = null)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        var deadline = DateTime.UtcNow + (timeout ?? StartupBound);
        string last = "";
        while (true)
        {
            if (Gateway.HasExited) throw new InvalidOperationException($"gateway exited:\n{Gateway.Tail()}");
            RestartNodesThatLostTheirPort();
            try
            {
                string metrics = await http.GetStringAsync(GatewayUrl + "/metrics");
                var lines = metrics.Split('\n').Where(l => l.StartsWith("serving_gateway_nodes", StringComparison.Ordinal)).ToList();
                last = string.Join("; ", lines);
                var wanted = " " + count.ToString(CultureInfo.InvariantCulture);
                if (lines.Count == 2 && lines.All(l => l.EndsWith(wanted, StringComparison.Ordinal))) return;
            }
            catch (HttpRequestException)
            {
            }
            catch (TaskCanceledException) when (DateTime.UtcNow < deadline)
            {
                // A scrape slower than the client's 5 s on a loaded machine: try again within the deadline.
            }
            if (DateTime.UtcNow > deadline)
            {
                // What each node answers the test itself on its readiness path: tells a node that does not answer from a
                // gateway that does not reach it (a stress run saw 2 nodes, 1 healthy, and no request in node-2's log).
                var probes = new List<string>();
                for (int i = 0; i < NodeUrls.Length; i++)
                {
                    try
                    {
                        using var ready = await http.GetAsync(NodeUrls[i] + "/health/ready");
                        probes.Add($"node-{i + 1} {NodeUrls[i]}: {(int)ready.StatusCode}, exited {Nodes[i].HasExited}");
                    }
                    catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
                    {
                        probes.Add($"node-{i + 1} {NodeUrls[i]}: {e.GetType().Name} {e.Message}, exited {Nodes[i].HasExited}");
                    }
                }
                throw new TimeoutException($"gateway sees '{last}', expected {count} nodes; direct probes: {string.Join("; ", probes)}\n{string.Join("\n---\n", _processes.Select(p => p.Name + ":\n" + p.Tail(15)))}");
            }
            await Task.Delay(100);
        }
    }

    /// <summary>POSTs to the model routes this node received (its request log lines).</summary>
    public static int ReceivedPosts(ServiceProcess node) =>
        node.Lines.Count(l => l.Contains("Request starting", StringComparison.Ordinal) && l.Contains("POST", StringComparison.Ordinal) && l.Contains("/v1/", StringComparison.Ordinal));

    public HttpClient Client(string? key = TenantKey)
    {
        var c = new HttpClient { BaseAddress = new Uri(GatewayUrl), Timeout = TimeSpan.FromSeconds(60) };
        if (key is not null) c.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        return c;
    }

    public void Dispose()
    {
        foreach (var p in _processes) p.Dispose();
        Redis.Dispose();
    }
}
