using System.Diagnostics;
using Microsoft.Extensions.Options;
using Serving.Checkpoints;
using Serving.Checkpoints.RewardHeads;
using Serving.Contracts.Models;
using Serving.Inference.Node.Hosting;
using Serving.Inference.Node.Telemetry;
using Serving.Inference.Rewards;

namespace Serving.Inference.Node.RewardHeads;

/// <summary>
/// The heads of <see cref="NodeOptions.RewardHeads"/> (name → folder with <c>config.json</c> and <c>head.safetensors</c>,
/// or the full Otter form with its <c>*.safetensors</c>), validated against the model when the node starts and served as
/// <c>public/&lt;name&gt;</c> for the node's lifetime. A folder that does not validate stops the start with the reason.
/// </summary>
public sealed class DirectoryRewardHeadSource : IRewardHeadSource
{
    private readonly Dictionary<string, RewardHead> _heads = new(StringComparer.Ordinal); // by name (tenant public)

    /// <summary>Loads every configured folder.</summary>
    public DirectoryRewardHeadSource(ModelHost host, IOptions<NodeOptions> options, ILogger<DirectoryRewardHeadSource> logger)
    {
        foreach (var (name, folder) in options.Value.RewardHeads)
        {
            var started = Stopwatch.GetTimestamp();
            var path = Path.GetFullPath(folder);
            var key = $"{ModelId.PublicTenant}/{name}@1";
            var config = Path.Combine(path, "config.json");
            var otter = LinkedFiles.Exists(config) && OtterReader.IsOtter(LinkedFiles.ReadAllBytes(config));
            var head = otter
                ? new RewardHead(OtterReader.ReadFolder(path, host.Model.Config), host.Model, key)
                : new RewardHead(RewardHeadReader.ReadFolder(path, host.Model.Config), host.Model, key);
            // Sessions of the Otter form outlive every request: released after the decoder when the node stops.
            host.DisposeAfterDecoder(head);
            _heads[name] = head;
            NodeLog.RewardHeadLoaded(logger, key, otter ? "otter-side-network" : "reward-head", folder, Stopwatch.GetElapsedTime(started).TotalMilliseconds);
        }
    }

    /// <inheritdoc />
    public string Name => "folders";

    /// <summary>Names of the configured heads (tenant <c>public</c>).</summary>
    public IReadOnlyCollection<string> Names => _heads.Keys;

    /// <inheritdoc />
    public ValueTask<RewardHead?> FindAsync(string tenant, string name, CancellationToken cancellationToken) =>
        ValueTask.FromResult(tenant == ModelId.PublicTenant && _heads.TryGetValue(name, out var head) ? head : null);
}
