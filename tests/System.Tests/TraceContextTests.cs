using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using Serving.System.Tests.Infrastructure;

namespace Serving.System.Tests;

/// <summary>
/// W3C trace context from a client through the real gateway into a real node process and its log records: the node's
/// console JSON lines (<c>Logging:Format</c> Json, its default) carry the client's trace id as <c>@tr</c>. A gateway that
/// dropped or replaced the header would fail it. (The span tree itself is checked in process by
/// <c>tests/Standalone.Tests/Telemetry/TraceContextTests.cs</c>.)
/// </summary>
public sealed class TraceContextTests(ClusterFixture fixture) : IClassFixture<ClusterFixture>
{
    [Fact]
    public async Task TraceParent_SentToTheGateway_AppearsInTheServingNodesLogRecords()
    {
        string traceId = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));
        string clientSpan = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8));
        using var client = fixture.Cluster.Client();
        using var request = Sse.Chat("Tell me a fortune", 4);
        request.Headers.Add("traceparent", $"00-{traceId}-{clientSpan}-01");
        using var response = await client.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);

        // The node that served it (its id is passed through by the gateway) logged the request under the client's trace.
        string nodeId = response.Headers.GetValues("X-Serving-Node").Single();
        var node = fixture.Cluster.Nodes[int.Parse(nodeId["node-".Length..], CultureInfo.InvariantCulture) - 1];
        string marker = $"\"@tr\":\"{traceId}\"";
        await node.WaitForLineAsync(l => l.Contains(marker, StringComparison.Ordinal), TimeSpan.FromSeconds(30));
        // Its records carry their own span ids, never the client's: the request crossed spans of its own on the way.
        Assert.All(node.Lines.Where(l => l.Contains(marker, StringComparison.Ordinal)), l => Assert.DoesNotContain($"\"@sp\":\"{clientSpan}\"", l));
        // The other node saw nothing of this trace.
        var other = fixture.Cluster.Nodes.Single(n => n != node);
        Assert.DoesNotContain(other.Lines, l => l.Contains(traceId, StringComparison.Ordinal));
    }
}
