using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using YamlDotNet.Core;
using YamlDotNet.Serialization;

namespace Serving.Deploy.Tests;

/// <summary>deploy/compose, deploy/docker and deploy/grafana read as files: settings, build targets, scrape targets, dashboard queries.</summary>
public sealed partial class ComposeTests
{
    private static readonly string Repo = Manifests.Repo();

    private static Dictionary<string, object?> Yaml(string path)
    {
        using var reader = new StringReader(File.ReadAllText(Path.Combine(Repo, path)));
        // compose.yaml uses YAML merge keys (<<: *anchor), which only the merging parser resolves.
        var parser = new MergingParser(new Parser(reader));
        return new DeserializerBuilder().Build().Deserialize<Dictionary<string, object?>>(parser);
    }

    private static Dictionary<string, object?> Map(object? o) => ((Dictionary<object, object?>)o!).ToDictionary(kv => (string)kv.Key, kv => kv.Value);

    private static Dictionary<string, Dictionary<string, object?>> Services() =>
        Map(Yaml("deploy/compose/compose.yaml")["services"]).ToDictionary(kv => kv.Key, kv => Map(kv.Value));

    private static Dictionary<string, string> Environment(Dictionary<string, object?> service) =>
        service.TryGetValue("environment", out var env) ? Map(env).ToDictionary(kv => kv.Key, kv => (string)kv.Value!) : [];

    private static readonly string[] ServingServices = ["gateway", "node-1", "node-2", "node-cuda"];

    [Fact]
    public void Compose_EverySettingIsAnOptionsKey_AndNodesAdvertiseTheirServiceName()
    {
        var services = Services();
        var problems = new List<string>();
        foreach (var name in ServingServices)
        {
            var env = Environment(services[name]);
            Assert.NotEmpty(env);
            problems.AddRange(env.Keys.Select(ConfigKeys.Problem).OfType<string>().Select(p => $"{name}: {p}"));
            if (name.StartsWith("node", StringComparison.Ordinal))
            {
                Assert.Equal($"http://{name}:8000", env["Node__AdvertisedUrl"]);
                Assert.Equal(name, env["Node__Id"]);
                Assert.Equal(Environment(services["gateway"])["AdapterStore__RedisConnectionString"], env["Node__Redis"]);
                Assert.Equal(Environment(services["gateway"])["Gateway__Routing__RegistryPrefix"], env["Node__RegistryPrefix"]);
                Assert.Equal(Environment(services["gateway"])["Gateway__Routing__NodeKey"], env["Node__GatewayKey"]);
                // Only the gateway is published: a node's port is not a way around tenancy.
                Assert.False(services[name].ContainsKey("ports"), $"{name} publishes a port");
            }
            Assert.Equal("true", services[name]["read_only"]?.ToString()?.ToLowerInvariant());
        }
        Assert.Empty(problems);
        Assert.Equal(["cuda"], ((List<object?>)services["node-cuda"]["profiles"]!).Cast<string>());
    }

    [Fact]
    public void Compose_BuildTargetsExistInTheDockerfileAndRunAsNonRoot()
    {
        string dockerfile = File.ReadAllText(Path.Combine(Repo, "deploy/docker/Dockerfile"));
        var stages = StageRegex().Matches(dockerfile).Select(m => m.Groups[1].Value).ToHashSet();
        foreach (var (name, service) in Services())
        {
            if (!service.TryGetValue("build", out var build)) continue;
            var b = Map(build);
            Assert.Equal("deploy/docker/Dockerfile", b["dockerfile"]);
            Assert.Contains((string)b["target"]!, stages);
            Assert.True(File.Exists(Path.Combine(Repo, "deploy/compose", (string)b["context"]!, "Serving.sln")), $"{name}: the build context is the repository root");
        }
        // Every runtime stage drops root and has a health check.
        foreach (var stage in new[] { "gateway", "node", "node-cuda", "standalone" })
        {
            Assert.Contains(stage, stages);
            string body = dockerfile[dockerfile.IndexOf($" AS {stage}\n", StringComparison.Ordinal)..];
            int next = body.IndexOf("\nFROM ", 1, StringComparison.Ordinal);
            body = next < 0 ? body : body[..next];
            Assert.Contains("USER 10001:10001", body);
            Assert.Contains("HEALTHCHECK", body);
            Assert.Contains("/health/ready", body);
        }
    }

    [Fact]
    public void Prometheus_ScrapesEveryServingServiceOnItsPort()
    {
        var services = Services();
        var jobs = ((List<object?>)Yaml("deploy/compose/prometheus.yml")["scrape_configs"]!).Select(Map).ToDictionary(j => (string)j["job_name"]!);
        var targets = jobs.ToDictionary(j => j.Key, j => ((List<object?>)Map(((List<object?>)j.Value["static_configs"]!)[0])["targets"]!).Cast<string>().ToList());
        Assert.Equal(["gateway:8080"], targets["serving-gateway"]);
        Assert.Equal(services.Keys.Where(k => k.StartsWith("node", StringComparison.Ordinal)).Select(k => $"{k}:8000").Order(), targets["serving-node"].Order());
        // The job name the Kubernetes autoscaler's queries filter on.
        var scaled = File.ReadAllText(Path.Combine(Repo, "deploy/kubernetes/autoscaling/scaledobject.yaml"));
        Assert.Contains("job=\"serving-node\"", scaled);
    }

    [Fact]
    public void GrafanaDashboard_CoversTheIssuesPanelsAndQueriesOnlyExportedMetrics()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Repo, "deploy/grafana/serving.json")));
        var panels = doc.RootElement.GetProperty("panels").EnumerateArray().ToList();
        var titles = panels.Select(p => p.GetProperty("title").GetString()!).ToList();
        foreach (var wanted in new[] { "Request rate", "Time to first token", "Time per output token", "Queue depth", "KV cache", "Adapter slot", "Adapter loads", "Tokens per tenant" })
            Assert.Contains(titles, t => t.StartsWith(wanted, StringComparison.Ordinal));
        var exported = MetricNames.Of(MetricNames.Node);
        exported.UnionWith(MetricNames.Of(MetricNames.Gateway));
        exported.Add("http_server_request_duration_seconds"); // ASP.NET Core's own meter, exported by the gateway
        int queries = 0;
        foreach (var expr in panels.SelectMany(p => p.GetProperty("targets").EnumerateArray()).Select(t => t.GetProperty("expr").GetString()!))
        {
            queries++;
            foreach (Match m in MetricRegex().Matches(expr))
            {
                string name = Regex.Replace(m.Value, "_(bucket|count|sum)$", "");
                Assert.True(exported.Contains(name), $"'{m.Value}' in '{expr}' is not a metric the services export");
            }
        }
        Assert.True(queries >= 15, queries.ToString(CultureInfo.InvariantCulture));
        Assert.Equal("prometheus", Map(((List<object?>)Yaml("deploy/grafana/provisioning/datasources/prometheus.yaml")["datasources"]!)[0])["uid"]);
    }

    [GeneratedRegex(@"^FROM \S+ AS (\S+)$", RegexOptions.Multiline)]
    private static partial Regex StageRegex();

    [GeneratedRegex(@"\b(serving_[a-z_]+|http_server_[a-z_]+)")]
    private static partial Regex MetricRegex();
}
