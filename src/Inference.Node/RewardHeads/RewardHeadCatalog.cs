using Microsoft.Extensions.Options;
using Serving.AdapterStore.Storage;
using Serving.Contracts.Errors;
using Serving.Contracts.Models;
using Serving.Inference.Node.Hosting;
using Serving.Inference.Rewards;

namespace Serving.Inference.Node.RewardHeads;

/// <summary>
/// The reward heads a request may name in <c>reward_head</c>: <c>tenant/name</c>, or <c>name</c> (the caller's tenant, then
/// <c>public</c>); a tenant sees its own heads and <c>public</c>'s, never another tenant's (an invisible head is "not
/// found", like an adapter). The heads come from its sources in order: the folders of <see cref="NodeOptions.RewardHeads"/>
/// (served as <c>public/&lt;name&gt;</c>), then the store when <see cref="NodeOptions.Redis"/> is set.
/// <see cref="NodeOptions.DefaultRewardHead"/> is used when a request asks for rewards or alignment without naming one.
/// </summary>
/// <remarks>
/// A bare name that both the caller's tenant and <c>public</c> have is the caller's (a tenant's own head shadows the
/// shared one), where a bare adapter name in <c>model</c> is refused as ambiguous: a head only scores, so taking the
/// tenant's own is the least surprising reading, and it needs one store lookup when the tenant has the head.
/// </remarks>
public sealed class RewardHeadCatalog(IReadOnlyList<IRewardHeadSource> sources, IOptions<NodeOptions> options)
{
    private readonly string? _default = options.Value.DefaultRewardHead;

    /// <summary>The sources asked, in order.</summary>
    public IReadOnlyList<IRewardHeadSource> Sources => sources;

    /// <summary>
    /// The head a request runs with: the named one, else the default when <paramref name="wanted"/> (the request asked
    /// for rewards or alignment), else none. Throws a 404 <c>reward_head_not_found</c> for an unknown or invisible name,
    /// and the sources' refusals (store unreachable, damaged or incompatible head).
    /// </summary>
    public async ValueTask<RewardHead?> ResolveAsync(string? name, string? tenant, bool wanted, CancellationToken cancellationToken)
    {
        if (string.IsNullOrEmpty(name))
        {
            if (!wanted || _default is null) return null;
            var slash = _default.IndexOf('/');
            return await FindAsync(_default[..slash], _default[(slash + 1)..], cancellationToken).ConfigureAwait(false)
                ?? throw new RequestRefusedException(ErrorCodes.RewardHeadNotFound,
                    $"The node's default reward head '{_default}' is not available; name a head in reward_head.", "reward_head");
        }
        var own = tenant ?? ModelId.PublicTenant;
        var cut = name.IndexOf('/');
        if (cut >= 0)
        {
            var (t, n) = (name[..cut], name[(cut + 1)..]);
            if ((t == own || t == ModelId.PublicTenant) && Valid(t, n) && await FindAsync(t, n, cancellationToken).ConfigureAwait(false) is { } head) return head;
        }
        else if (Valid(own, name))
        {
            if (await FindAsync(own, name, cancellationToken).ConfigureAwait(false) is { } ownHead) return ownHead;
            if (own != ModelId.PublicTenant && await FindAsync(ModelId.PublicTenant, name, cancellationToken).ConfigureAwait(false) is { } shared) return shared;
        }
        throw new RequestRefusedException(ErrorCodes.RewardHeadNotFound, $"The reward head '{name}' does not exist or is not visible to this tenant.", "reward_head");
    }

    private async ValueTask<RewardHead?> FindAsync(string tenant, string name, CancellationToken cancellationToken)
    {
        foreach (var source in sources)
        {
            if (await source.FindAsync(tenant, name, cancellationToken).ConfigureAwait(false) is { } head) return head;
        }
        return null;
    }

    private static bool Valid(string tenant, string name) => AdapterKeys.IsValidTenant(tenant) && AdapterKeys.IsValidName(name);
}
