using Serving.Contracts.Registry;
using Serving.Gateway.Routing;

namespace Serving.Gateway.Tests.Routing;

public sealed class NodeAdmissionTests
{
    private static Candidate Node(string id, int inFlight, int maxRunning = 4, int maxQueue = 8, bool ready = true, string model = "m") =>
        new(new NodeEntry(new NodeHeartbeat
        {
            NodeId = id, BaseUrl = $"http://{id}/", Model = model, Ready = ready, MaxRunning = maxRunning, MaxQueue = maxQueue,
        }), inFlight);

    [Fact]
    public void Limit_IsRunningPlusQueue_OrUnknownWhenEitherIsMissing()
    {
        Assert.Equal(12, NodeAdmission.Limit(Node("a", 0).Node));
        Assert.Equal(0, NodeAdmission.Limit(Node("a", 0, maxQueue: 0).Node));
        Assert.Equal(0, NodeAdmission.Limit(Node("a", 0, maxRunning: 0).Node));
    }

    [Fact]
    public void AllFull_EveryNodeAtItsLimit_True()
    {
        Assert.True(NodeAdmission.AllFull([Node("a", 12), Node("b", 13, maxRunning: 5)], "m"));
    }

    [Fact]
    public void AllFull_OneNodeBelowItsLimit_False()
    {
        Assert.False(NodeAdmission.AllFull([Node("a", 12), Node("b", 11)], "m"));
    }

    [Fact]
    public void AllFull_NodesOfOtherModelsAndUnreadyNodes_Ignored()
    {
        // Room on a node of another model, or on one that is not ready, is no room for this request.
        Assert.True(NodeAdmission.AllFull([Node("a", 12), Node("b", 0, model: "other"), Node("c", 0, ready: false)], "m"));
    }

    [Fact]
    public void AllFull_NodeWithoutPublishedLimits_NeverFull()
    {
        Assert.False(NodeAdmission.AllFull([Node("a", 1000, maxQueue: 0)], "m"));
    }

    [Fact]
    public void AllFull_NoNodeServesTheModel_False()
    {
        // Nothing to shed for: routing answers "no node available" (503) instead.
        Assert.False(NodeAdmission.AllFull([Node("a", 12, model: "other")], "m"));
        Assert.False(NodeAdmission.AllFull([], "m"));
    }
}
