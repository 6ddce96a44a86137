namespace Serving.Gateway.Routing;

/// <summary>Names of the built-in routing pieces.</summary>
public static class RoutingPolicies
{
    /// <summary>The adapter-aware load-balancing policy (<see cref="AdapterAffinityPolicy"/>).</summary>
    public const string AdapterAffinity = "AdapterAffinity";

    /// <summary>The YARP cluster of inference nodes.</summary>
    public const string NodesCluster = "nodes";
}
