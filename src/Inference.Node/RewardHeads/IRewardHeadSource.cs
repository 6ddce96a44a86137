using Serving.Inference.Rewards;

namespace Serving.Inference.Node.RewardHeads;

/// <summary>
/// Where the node's reward heads come from: folders named in <c>Node:RewardHeads</c>
/// (<see cref="DirectoryRewardHeadSource"/>) or the store (<see cref="StoreRewardHeadSource"/>, with <c>Node:Redis</c>).
/// Visibility is the <see cref="RewardHeadCatalog"/>'s; a source only answers for an exact <c>tenant/name</c>.
/// </summary>
public interface IRewardHeadSource
{
    /// <summary>A short name for logs (<c>folders</c>, <c>store</c>).</summary>
    string Name { get; }

    /// <summary>
    /// The current version of <c>tenant/name</c> bound to this node's model, or null when this source has no such head.
    /// The object stays valid for as long as a request holds it, even after a newer version replaced it. Throws a
    /// <see cref="Contracts.Errors.RequestRefusedException"/> when the head exists but cannot be served (store down,
    /// damaged, made for another model).
    /// </summary>
    ValueTask<RewardHead?> FindAsync(string tenant, string name, CancellationToken cancellationToken);
}
