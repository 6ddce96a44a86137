using System.Globalization;
using System.Text.RegularExpressions;
using k8s.Models;
using Serving.Inference.Node.Hosting;
using Serving.ServiceDefaults;

namespace Serving.Deploy.Tests;

/// <summary>Every kustomization under deploy/kubernetes, rendered and loaded strictly, then checked for what a cluster would only tell at run time.</summary>
public sealed partial class KubernetesManifestTests
{
    public static TheoryData<string> Kustomizations => new() { "base", "overlays/dev", "overlays/gpu", "overlays/gpu-redis-cluster" };

    [Theory]
    [MemberData(nameof(Kustomizations))]
    public void Render_Kustomization_LoadsStrictlyWithTheServingObjects(string kustomization)
    {
        var m = Manifests.Render(kustomization);
        Assert.All(m.Objects, o => Assert.NotNull(o));
        Assert.NotNull(m.Gateway);
        Assert.NotNull(m.Node);
        Assert.Single(m.Objects.OfType<V1PodDisruptionBudget>(), p => p.Metadata.Name == "serving-node");
        Assert.Single(m.Objects.OfType<V2HorizontalPodAutoscaler>(), h => h.Spec.ScaleTargetRef.Name == "serving-gateway" && h.Spec.ScaleTargetRef.Kind == "Deployment");
        Assert.Contains(m.Objects.OfType<V1NetworkPolicy>(), p => p.Metadata.Name == "serving-node-ingress");
    }

    [Theory]
    [MemberData(nameof(Kustomizations))]
    public void Deployments_ProbeTheHealthPathsRequestResourcesAndRunRestricted(string kustomization)
    {
        var m = Manifests.Render(kustomization);
        foreach (var d in new[] { m.Gateway, m.Node })
        {
            var pod = d.Spec.Template.Spec;
            var c = Assert.Single(pod.Containers);
            string port = Assert.Single(c.Ports).Name;
            Assert.Equal(HealthEndpoints.ReadyPath, c.ReadinessProbe.HttpGet.Path);
            Assert.Equal(HealthEndpoints.LivePath, c.LivenessProbe.HttpGet.Path);
            Assert.Equal(HealthEndpoints.LivePath, c.StartupProbe.HttpGet.Path);
            Assert.All(new[] { c.ReadinessProbe, c.LivenessProbe, c.StartupProbe }, p => Assert.Equal(port, p.HttpGet.Port.Value));
            Assert.True(c.Resources.Requests.ContainsKey("cpu") && c.Resources.Requests.ContainsKey("memory"), $"{d.Metadata.Name}: cpu and memory requests");
            Assert.True(c.Resources.Limits.ContainsKey("memory"), $"{d.Metadata.Name}: a memory limit");
            Assert.True(pod.SecurityContext.RunAsNonRoot);
            Assert.True(c.SecurityContext.ReadOnlyRootFilesystem);
            Assert.False(c.SecurityContext.AllowPrivilegeEscalation);
            Assert.Contains("ALL", c.SecurityContext.Capabilities.Drop);
            // A read-only root needs a writable /tmp (ASP.NET Core, ONNX Runtime).
            Assert.Contains(c.VolumeMounts, v => v.MountPath == "/tmp");
            Assert.Matches(@":\d+\.\d+\.\d+$", c.Image);
        }
    }

    [Theory]
    [MemberData(nameof(Kustomizations))]
    public void Selectors_ServicesBudgetsPoliciesAndMonitorsFindThePodsTheyName(string kustomization)
    {
        var m = Manifests.Render(kustomization);
        foreach (var s in m.Services)
        {
            var target = m.Deployments.Where(d => Manifests.Selects(s.Spec.Selector, d.Spec.Template.Metadata.Labels)).ToList();
            Assert.True(target.Count == 1, $"{kustomization}: Service {s.Metadata.Name} selects {target.Count} Deployments");
            var container = target[0].Spec.Template.Spec.Containers[0];
            Assert.All(s.Spec.Ports, p => Assert.Contains(container.Ports, cp => cp.Name == p.TargetPort.Value || cp.ContainerPort.ToString(CultureInfo.InvariantCulture) == p.TargetPort.Value));
        }
        foreach (var d in m.Deployments) Assert.True(Manifests.Selects(d.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels), $"{d.Metadata.Name}: selector vs template labels");
        foreach (var pdb in m.Objects.OfType<V1PodDisruptionBudget>())
            Assert.Single(m.Deployments, d => Manifests.Selects(pdb.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels));
        foreach (var monitor in m.Objects.OfType<ServiceMonitor>())
        {
            var service = Assert.Single(m.Services, s => Manifests.Selects(monitor.Spec.Selector.MatchLabels, s.Metadata.Labels));
            Assert.All(monitor.Spec.Endpoints, e => Assert.Contains(service.Spec.Ports, p => p.Name == e.Port));
            Assert.All(monitor.Spec.Endpoints, e => Assert.Equal("/metrics", e.Path));
        }
        foreach (var scaled in m.Objects.OfType<ScaledObject>()) Assert.Equal(m.Node.Metadata.Name, scaled.Spec.ScaleTargetRef.Name);
    }

    [Theory]
    [MemberData(nameof(Kustomizations))]
    public void ConfigKeys_EverySettingTheManifestsGiveExistsInTheServicesOptions(string kustomization)
    {
        var m = Manifests.Render(kustomization);
        var problems = new List<string>();
        int checkedKeys = 0;
        foreach (var d in new[] { m.Gateway, m.Node })
        {
            foreach (var (name, _) in m.Environment(d.Spec.Template.Spec.Containers[0]))
            {
                if (name == "POD_IP") continue; // only expanded into Node__AdvertisedUrl
                checkedKeys++;
                if (ConfigKeys.Problem(name) is { } p) problems.Add($"{d.Metadata.Name}: {p}");
            }
            foreach (var e in d.Spec.Template.Spec.Containers[0].Env ?? [])
            {
                // Overlays that generate the Secret (dev) must generate every key a pod requires; elsewhere the operator creates it.
                if (e.ValueFrom?.SecretKeyRef is { } secretRef && secretRef.Optional != true && m.Secrets.SingleOrDefault(s => s.Metadata.Name == secretRef.Name) is { } secret)
                    Assert.True(secret.Data.ContainsKey(secretRef.Key), $"{kustomization}: Secret {secretRef.Name} lacks {secretRef.Key}");
            }
        }
        Assert.True(checkedKeys > 20, $"only {checkedKeys} keys found: the environment was not read");
        Assert.Empty(problems);
    }

    [Fact]
    public void ConfigKeys_AMisspeltOrUnknownKey_IsReported()
    {
        // The check itself must be able to fail.
        Assert.Null(ConfigKeys.Problem("Node__Redis"));
        Assert.Null(ConfigKeys.Problem("Gateway__Tenancy__StaticKeys__3__Tenant"));
        Assert.Null(ConfigKeys.Problem("Gateway__BaseModels__anything"));
        Assert.Null(ConfigKeys.Problem("Redis__TlsCaFile"));
        Assert.NotNull(ConfigKeys.Problem("Node__Reddis"));
        Assert.NotNull(ConfigKeys.Problem("Gateway__Routing__RegistryPrefx"));
        Assert.NotNull(ConfigKeys.Problem("Gateway__Tenancy__StaticKeys__first__Key"));
        Assert.NotNull(ConfigKeys.Problem("Gateway__Tenancy"));
        Assert.NotNull(ConfigKeys.Problem("Nodes__ModelPath"));
        // The shared logging and telemetry keys (ServiceDefaults); Serilog's own section is read by no service.
        Assert.Null(ConfigKeys.Problem("Logging__LogLevel__Microsoft.AspNetCore"));
        Assert.Null(ConfigKeys.Problem("Logging__Format"));
        Assert.Null(ConfigKeys.Problem("Telemetry__OtlpEndpoint"));
        Assert.NotNull(ConfigKeys.Problem("Telemetry__OtlpEndpont"));
        Assert.NotNull(ConfigKeys.Problem("Serilog__MinimumLevel__Default"));
    }

    [Theory]
    [MemberData(nameof(Kustomizations))]
    public void Node_TerminationGraceCoversPreStopDrainAndMargin(string kustomization)
    {
        var m = Manifests.Render(kustomization);
        var pod = m.Node.Spec.Template.Spec;
        var container = pod.Containers[0];
        var drain = TimeSpan.Parse(m.Value(container, "Node__ShutdownDrain") ?? throw new InvalidOperationException("Node__ShutdownDrain is not set"), CultureInfo.InvariantCulture);
        long preStop = container.Lifecycle.PreStop.Sleep.Seconds;
        Assert.True(pod.TerminationGracePeriodSeconds >= preStop + (drain + NodeOptions.ShutdownMargin).TotalSeconds,
            $"grace {pod.TerminationGracePeriodSeconds} s < preStop {preStop} s + drain {drain.TotalSeconds} s + margin {NodeOptions.ShutdownMargin.TotalSeconds} s");
        Assert.Equal("0.0.0.0", m.Value(container, "Node__Host"));
        Assert.Equal(container.Ports[0].ContainerPort.ToString(CultureInfo.InvariantCulture), m.Value(container, "Node__Port"));
        Assert.Equal($"http://$(POD_IP):{container.Ports[0].ContainerPort}", m.Value(container, "Node__AdvertisedUrl"));
    }

    [Theory]
    [MemberData(nameof(Kustomizations))]
    public void GatewayAndNodes_AgreeOnBaseModelRedisAndRegistry(string kustomization)
    {
        var m = Manifests.Render(kustomization);
        var gw = m.Gateway.Spec.Template.Spec.Containers[0];
        var node = m.Node.Spec.Template.Spec.Containers[0];
        string modelId = m.Value(node, "Node__ModelId") ?? Path.GetFileName(m.Value(node, "Node__ModelPath")!);
        var baseModels = m.Environment(gw).Where(e => e.Name.StartsWith("Gateway__BaseModels__", StringComparison.Ordinal)).ToList();
        var only = Assert.Single(baseModels);
        Assert.Equal($"Gateway__BaseModels__{modelId}", only.Name);
        Assert.Equal(m.Value(node, "Node__ModelPath") + "/config.json", only.Value);
        Assert.Equal(m.Value(gw, "AdapterStore__RedisConnectionString"), m.Value(node, "Node__Redis"));
        Assert.Equal(m.Value(gw, "Gateway__Routing__RegistryPrefix"), m.Value(node, "Node__RegistryPrefix"));
        Assert.Equal(m.Value(gw, "AdapterStore__KeyLayout"), m.Value(node, "Node__AdapterKeyLayout"));
        // The credential the gateway sends is the one the nodes require: the same key of the same Secret.
        var sent = m.Gateway.Spec.Template.Spec.Containers[0].Env.Single(e => e.Name == "Gateway__Routing__NodeKey").ValueFrom.SecretKeyRef;
        var required = m.Node.Spec.Template.Spec.Containers[0].Env.Single(e => e.Name == "Node__GatewayKey").ValueFrom.SecretKeyRef;
        Assert.Equal((sent.Name, sent.Key), (required.Name, required.Key));
        Assert.NotEqual(true, required.Optional);
        foreach (var key in new[] { "Redis__User", "Redis__Tls", "Redis__TlsCaFile" }) Assert.Equal(m.Value(gw, key), m.Value(node, key));
    }

    [Fact]
    public void GpuOverlays_NodeRequestsOneGpuOnTheGpuPoolAndRunsCuda()
    {
        foreach (var kustomization in new[] { "overlays/gpu", "overlays/gpu-redis-cluster" })
        {
            var m = Manifests.Render(kustomization);
            var pod = m.Node.Spec.Template.Spec;
            var c = pod.Containers[0];
            Assert.Equal("1", c.Resources.Limits["nvidia.com/gpu"].ToString());
            Assert.Equal("1", c.Resources.Requests["nvidia.com/gpu"].ToString());
            Assert.Contains(pod.Tolerations, t => t.Key == "nvidia.com/gpu" && t.Effect == "NoSchedule");
            Assert.Equal("true", pod.NodeSelector["nvidia.com/gpu.present"]);
            Assert.Equal("Cuda", m.Value(c, "Node__ExecutionProvider"));
            Assert.Contains("serving-node-cuda", c.Image);
            Assert.Contains(c.VolumeMounts, v => v.MountPath == "/models" && v.ReadOnlyProperty == true);
            // The gateway has no GPU.
            Assert.False(m.Gateway.Spec.Template.Spec.Containers[0].Resources.Limits.ContainsKey("nvidia.com/gpu"));
        }
        var cluster = Manifests.Render("overlays/gpu-redis-cluster");
        Assert.Equal("1", cluster.Value(cluster.Gateway.Spec.Template.Spec.Containers[0], "AdapterStore__WaitReplicas"));
    }

    [Fact]
    public void NodeAutoscaling_QueriesQueueDepthAndKvOccupancyTheNodeExports()
    {
        var m = Manifests.Render("overlays/gpu");
        var scaled = Assert.Single(m.Objects.OfType<ScaledObject>());
        Assert.True(scaled.Spec.MinReplicaCount >= 1, "never to zero: a cold node loads its model for minutes");
        var exported = MetricNames.Of(MetricNames.Node);
        var queried = new HashSet<string>();
        foreach (var t in scaled.Spec.Triggers)
        {
            Assert.Equal("prometheus", t.Type);
            Assert.True(double.Parse(t.Metadata["threshold"], CultureInfo.InvariantCulture) > 0);
            foreach (Match name in MetricName().Matches(t.Metadata["query"]))
            {
                Assert.Contains(name.Value, exported);
                queried.Add(name.Value);
            }
            // The job label Prometheus Operator gives the node's series is its Service's name.
            Assert.Contains($"job=\"{m.Services.Single(s => s.Metadata.Name == "serving-node").Metadata.Name}\"", t.Metadata["query"]);
        }
        Assert.Equal(["serving_node_kv_cache_usage_perc", "serving_node_num_requests_waiting"], queried.Order());
    }

    [Fact]
    public void NetworkPolicy_NodesAdmitOnlyGatewayPodsAndTheMonitoringNamespace()
    {
        var m = Manifests.Render("base");
        var policy = m.Objects.OfType<V1NetworkPolicy>().Single(p => p.Metadata.Name == "serving-node-ingress");
        Assert.True(Manifests.Selects(policy.Spec.PodSelector.MatchLabels, m.Node.Spec.Template.Metadata.Labels));
        Assert.False(Manifests.Selects(policy.Spec.PodSelector.MatchLabels, m.Gateway.Spec.Template.Metadata.Labels));
        Assert.Equal(["Ingress"], policy.Spec.PolicyTypes);
        foreach (var rule in policy.Spec.Ingress)
        {
            var peer = Assert.Single(rule.FromProperty);
            bool gateway = peer.PodSelector is not null && peer.NamespaceSelector is null && Manifests.Selects(peer.PodSelector.MatchLabels, m.Gateway.Spec.Template.Metadata.Labels);
            bool monitoring = peer.PodSelector is null && peer.NamespaceSelector?.MatchLabels?["kubernetes.io/metadata.name"] == "monitoring";
            Assert.True(gateway || monitoring, "a node ingress rule admits someone other than the gateway pods or the monitoring namespace");
            Assert.All(rule.Ports, p => Assert.Equal(m.Node.Spec.Template.Spec.Containers[0].Ports[0].ContainerPort.ToString(CultureInfo.InvariantCulture), p.Port.Value));
        }
    }

    [GeneratedRegex("serving_[a-z_]+")]
    private static partial Regex MetricName();
}
