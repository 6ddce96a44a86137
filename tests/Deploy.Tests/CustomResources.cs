using System.Text.Json.Serialization;
using k8s;
using k8s.Models;

namespace Serving.Deploy.Tests;

// The two custom resources the manifests use, with the fields of their published schemas that the manifests set, so a
// strict load refuses a misspelt field there as it does in the official models. KEDA: keda.sh/v1alpha1 ScaledObject
// (keda.sh/docs/latest/reference/scaledobject-spec); Prometheus Operator: monitoring.coreos.com/v1 ServiceMonitor.

/// <summary>KEDA ScaledObject.</summary>
public sealed class ScaledObject : IKubernetesObject<V1ObjectMeta>
{
    [JsonPropertyName("apiVersion")] public string ApiVersion { get; set; } = "";
    [JsonPropertyName("kind")] public string Kind { get; set; } = "";
    [JsonPropertyName("metadata")] public V1ObjectMeta Metadata { get; set; } = new();
    [JsonPropertyName("spec")] public ScaledObjectSpec Spec { get; set; } = new();
}

public sealed class ScaledObjectSpec
{
    [JsonPropertyName("scaleTargetRef")] public ScaleTarget ScaleTargetRef { get; set; } = new();
    [JsonPropertyName("minReplicaCount")] public int? MinReplicaCount { get; set; }
    [JsonPropertyName("maxReplicaCount")] public int? MaxReplicaCount { get; set; }
    [JsonPropertyName("pollingInterval")] public int? PollingInterval { get; set; }
    [JsonPropertyName("cooldownPeriod")] public int? CooldownPeriod { get; set; }
    [JsonPropertyName("advanced")] public ScaledObjectAdvanced? Advanced { get; set; }
    [JsonPropertyName("triggers")] public List<ScaleTrigger> Triggers { get; set; } = [];
}

public sealed class ScaleTarget
{
    [JsonPropertyName("name")] public string Name { get; set; } = "";
    [JsonPropertyName("kind")] public string? Kind { get; set; }
    [JsonPropertyName("apiVersion")] public string? ApiVersion { get; set; }
}

public sealed class ScaledObjectAdvanced
{
    [JsonPropertyName("horizontalPodAutoscalerConfig")] public HpaConfig? HorizontalPodAutoscalerConfig { get; set; }
}

public sealed class HpaConfig
{
    [JsonPropertyName("behavior")] public V2HorizontalPodAutoscalerBehavior? Behavior { get; set; }
}

public sealed class ScaleTrigger
{
    [JsonPropertyName("type")] public string Type { get; set; } = "";
    [JsonPropertyName("name")] public string? Name { get; set; }
    [JsonPropertyName("metadata")] public Dictionary<string, string> Metadata { get; set; } = [];
}

/// <summary>Prometheus Operator ServiceMonitor.</summary>
public sealed class ServiceMonitor : IKubernetesObject<V1ObjectMeta>
{
    [JsonPropertyName("apiVersion")] public string ApiVersion { get; set; } = "";
    [JsonPropertyName("kind")] public string Kind { get; set; } = "";
    [JsonPropertyName("metadata")] public V1ObjectMeta Metadata { get; set; } = new();
    [JsonPropertyName("spec")] public ServiceMonitorSpec Spec { get; set; } = new();
}

public sealed class ServiceMonitorSpec
{
    [JsonPropertyName("selector")] public V1LabelSelector Selector { get; set; } = new();
    [JsonPropertyName("endpoints")] public List<ServiceMonitorEndpoint> Endpoints { get; set; } = [];
}

public sealed class ServiceMonitorEndpoint
{
    [JsonPropertyName("port")] public string Port { get; set; } = "";
    [JsonPropertyName("path")] public string? Path { get; set; }
    [JsonPropertyName("interval")] public string? Interval { get; set; }
}
