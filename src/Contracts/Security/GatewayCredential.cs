using System.Security.Cryptography;
using System.Text;

namespace Serving.Contracts.Security;

/// <summary>
/// The shared secret a gateway presents to inference nodes, so that in a cluster a node's port is not a way around the
/// gateway's tenancy: a node configured with a key (<c>Node:GatewayKey</c>) serves only requests that carry it in
/// <see cref="Header"/>, and the gateway (<c>Gateway:Routing:NodeKey</c>) adds it to every forwarded request after
/// dropping whatever <see cref="HeaderPrefix"/> headers the client sent. A shared secret rather than mTLS: it needs no
/// certificate authority in the cluster, rotates as a Kubernetes Secret, and rides the same HTTP the nodes already
/// serve; NetworkPolicy keeps others off the nodes' port as a second layer (docs/deploy.md).
/// </summary>
public static class GatewayCredential
{
    /// <summary>Request header carrying the key from gateway to node.</summary>
    public const string Header = "X-Serving-Gateway-Key";

    /// <summary>Prefix of the headers only the gateway may set on a forwarded request (tenant, credential).</summary>
    public const string HeaderPrefix = "X-Serving-";

    /// <summary>Shortest accepted key (characters); generate one with e.g. <c>openssl rand -hex 32</c>.</summary>
    public const int MinLength = 16;

    /// <summary>True when <paramref name="presented"/> equals <paramref name="expected"/>, compared in time independent of where they differ.</summary>
    public static bool Matches(string? presented, string expected) =>
        presented is not null && CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(presented), Encoding.UTF8.GetBytes(expected));
}
