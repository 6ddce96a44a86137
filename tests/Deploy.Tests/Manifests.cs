using System.Diagnostics;
using k8s;
using k8s.Models;

namespace Serving.Deploy.Tests;

/// <summary>
/// One kustomization rendered by <c>kubectl kustomize</c> (the kubectl on PATH; no cluster needed) and loaded strictly
/// into the official KubernetesClient models (an unknown field or a wrong type is an error), plus the two custom resources.
/// </summary>
internal sealed class Manifests
{
    private static readonly Dictionary<string, Type> CustomTypes = new()
    {
        ["keda.sh/v1alpha1/ScaledObject"] = typeof(ScaledObject),
        ["monitoring.coreos.com/v1/ServiceMonitor"] = typeof(ServiceMonitor),
    };

    private Manifests(string dir, IReadOnlyList<object> objects)
    {
        Dir = dir;
        Objects = objects;
    }

    public string Dir { get; }
    public IReadOnlyList<object> Objects { get; }

    public IEnumerable<V1Deployment> Deployments => Objects.OfType<V1Deployment>();
    public IEnumerable<V1Service> Services => Objects.OfType<V1Service>();
    public IEnumerable<V1ConfigMap> ConfigMaps => Objects.OfType<V1ConfigMap>();
    public IEnumerable<V1Secret> Secrets => Objects.OfType<V1Secret>();
    public V1Deployment Gateway => Deployments.Single(d => d.Metadata.Name == "serving-gateway");
    public V1Deployment Node => Deployments.Single(d => d.Metadata.Name == "serving-node");
    public V1ConfigMap NodeConfig => ConfigMaps.Single(c => c.Metadata.Name == "serving-node");
    public V1ConfigMap GatewayConfig => ConfigMaps.Single(c => c.Metadata.Name == "serving-gateway");

    public static string Repo()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Serving.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("Serving.sln not found above the test binaries.");
    }

    public static Manifests Render(string kustomization)
    {
        string dir = Path.Combine(Repo(), "deploy", "kubernetes", kustomization);
        var psi = new ProcessStartInfo("kubectl") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "kustomize", dir }) psi.ArgumentList.Add(a);
        Process process;
        try
        {
            process = Process.Start(psi)!;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            throw new InvalidOperationException("kubectl is not on PATH: these tests render the manifests with `kubectl kustomize` (kubectl 1.27+).");
        }
        using (process)
        {
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(TimeSpan.FromMinutes(2))) throw new TimeoutException("kubectl kustomize did not finish.");
            if (process.ExitCode != 0) throw new InvalidOperationException($"kubectl kustomize {kustomization} failed: {stderr.Result}");
            return new Manifests(kustomization, KubernetesYaml.LoadAllFromString(stdout.Result, CustomTypes, strict: true));
        }
    }

    /// <summary>Every environment variable a container gets: its env entries and the keys of the ConfigMaps/Secrets it imports.</summary>
    public IEnumerable<(string Name, string? Value)> Environment(V1Container container)
    {
        foreach (var from in container.EnvFrom ?? [])
        {
            if (from.ConfigMapRef is { } cm)
            {
                var map = ConfigMaps.SingleOrDefault(c => c.Metadata.Name == cm.Name);
                if (map is null && cm.Optional != true) throw new InvalidOperationException($"{Dir}: ConfigMap {cm.Name} is imported but not rendered.");
                foreach (var (k, v) in map?.Data ?? new Dictionary<string, string>()) yield return (k, v);
            }
            if (from.SecretRef is { } s)
            {
                var secret = Secrets.SingleOrDefault(x => x.Metadata.Name == s.Name);
                foreach (var k in secret?.Data?.Keys ?? secret?.StringData?.Keys ?? []) yield return (k, null);
            }
        }
        foreach (var e in container.Env ?? []) yield return (e.Name, e.Value);
    }

    /// <summary>The value a container sees for <paramref name="name"/> (a later entry wins, as in Kubernetes: env over envFrom).</summary>
    public string? Value(V1Container container, string name) => Environment(container).LastOrDefault(e => e.Name == name).Value;

    public static bool Selects(IDictionary<string, string>? selector, IDictionary<string, string>? labels) =>
        selector is { Count: > 0 } && labels is not null && selector.All(kv => labels.TryGetValue(kv.Key, out var v) && v == kv.Value);
}
