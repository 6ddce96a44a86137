using System.Reflection;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;
using Serving.Inference.Node.Adapters;
using Serving.Inference.Node.Hosting;

namespace Serving.Inference.Node.Status;

/// <summary>KV cache occupancy in a status report.</summary>
public sealed record KvStatus(int Slots, int SlotsUsed, double Usage, long Tokens, long TokenCapacity);

/// <summary>What the gateway reads to route: load, KV usage, loaded adapters, identity.</summary>
public sealed record NodeStatus(
    string Model,
    string Version,
    bool Accepting,
    int QueueDepth,
    int RunningRequests,
    int RunningRows,
    KvStatus Kv,
    AdapterTiers Adapters,
    int MaxContext,
    long Steps,
    WeightsStatus Weights,
    PrefillStatus Prefill);

/// <summary>
/// How prompts are scheduled: mixed steps and their token budget, prefix reuse, and how many admitted prompt tokens
/// were copied from running requests instead of computed (docs/scheduling.md).
/// </summary>
public sealed record PrefillStatus(bool MixedSteps, int MaxTokensPerStep, int MaxPrefillTokensPerStep, bool PrefixReuse, long PromptTokens, long PrefixTokensReused);

/// <summary>How the model's weights are held: format (fp32, int8, int4), bytes of the projections and the LM head, and the blocks' arithmetic (fp32, fp16).</summary>
public sealed record WeightsStatus(string Format, long ProjectionBytes, long HeadBytes, int? BlockSize, bool HeadQuantized, string Precision);

/// <summary><c>GET /node/status</c>.</summary>
public static class NodeStatusApi
{
    /// <summary>The node's version (assembly informational version).</summary>
    public static readonly string Version =
        typeof(NodeStatusApi).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0.0.0";

    /// <summary>Maps <c>/node/status</c>.</summary>
    public static IEndpointRouteBuilder MapNodeStatusApi(this IEndpointRouteBuilder app)
    {
        app.MapGet("/node/status", GetStatus);
        return app;
    }

    /// <summary>Queue depth, running rows, KV usage, adapters per tier, model id, version.</summary>
    public static Ok<NodeStatus> GetStatus(ModelHost host, AdapterManager adapters, IOptions<NodeOptions> options)
    {
        var s = host.Scheduler.Status;
        var o = options.Value;
        return TypedResults.Ok(new NodeStatus(host.ModelId, Version, s.Accepting, s.Waiting, s.RunningRequests, s.RunningRows,
            new KvStatus(s.KvSlots, s.RunningRows, s.KvUsage, s.KvTokens, s.KvTokenCapacity), adapters.Tiers(), host.MaxContext, s.Steps,
            host.Weights, new PrefillStatus(o.MixedSteps, o.MaxTokensPerStep, o.MaxPrefillTokensPerStep, o.PrefixReuse, s.PromptTokens, s.PrefixTokensReused)));
    }
}
