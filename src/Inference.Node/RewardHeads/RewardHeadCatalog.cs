using Microsoft.Extensions.Options;
using Serving.Checkpoints.RewardHeads;
using Serving.Contracts.Models;
using Serving.Inference.Node.Hosting;
using Serving.Contracts.Errors;
using Serving.Inference.Rewards;

namespace Serving.Inference.Node.RewardHeads;

/// <summary>
/// The reward heads a request may name in <c>reward_head</c>: <c>tenant/name</c>, or <c>name</c> (the caller's tenant, then
/// <c>public</c>); a tenant sees its own heads and <c>public</c>'s, never another tenant's (an invisible head is "not
/// found", like an adapter). Heads configured in <see cref="NodeOptions.RewardHeads"/> are validated against the
/// model at start (a head-only head, or the full Otter form with its side network) and served as <c>public/&lt;name&gt;</c>; <see cref="NodeOptions.DefaultRewardHead"/> is used when a
/// request asks for rewards or alignment without naming one.
/// </summary>
public sealed class RewardHeadCatalog
{
    private readonly Dictionary<string, RewardHead> _heads = new(StringComparer.Ordinal); // by tenant/name
    private readonly string? _default;

    public RewardHeadCatalog(ModelHost host, IOptions<NodeOptions> options, ILogger<RewardHeadCatalog> logger)
    {
        var o = options.Value;
        foreach (var (name, folder) in o.RewardHeads)
        {
            var path = Path.GetFullPath(folder);
            var key = $"{ModelId.PublicTenant}/{name}@1";
            var config = Path.Combine(path, "config.json");
            _heads[$"{ModelId.PublicTenant}/{name}"] = File.Exists(config) && OtterReader.IsOtter(File.ReadAllBytes(config))
                ? new RewardHead(OtterReader.ReadFolder(path, host.Model.Config), host.Model, key)
                : new RewardHead(RewardHeadReader.ReadFolder(path, host.Model.Config), host.Model, key);
            logger.LogInformation("Reward head {RewardHead} loaded from {Folder}", $"{ModelId.PublicTenant}/{name}", folder);
        }
        _default = o.DefaultRewardHead;
        if (_default is not null && !_heads.ContainsKey(_default)) throw new InvalidOperationException($"Node:DefaultRewardHead '{_default}' is not one of the configured heads ({string.Join(", ", _heads.Keys)}).");
    }

    /// <summary>Every head the tenant may use, as <c>tenant/name</c>.</summary>
    public IEnumerable<(string Id, RewardHead Head)> Visible(string? tenant)
    {
        var own = tenant ?? ModelId.PublicTenant;
        foreach (var (id, head) in _heads)
        {
            var t = id[..id.IndexOf('/')];
            if (t == own || t == ModelId.PublicTenant) yield return (id, head);
        }
    }

    /// <summary>
    /// The head a request runs with: the named one, else the default when <paramref name="wanted"/> (the request asked
    /// for rewards or alignment), else none. Throws a 404 <c>reward_head_not_found</c> for an unknown or invisible name.
    /// </summary>
    public RewardHead? Resolve(string? name, string? tenant, bool wanted)
    {
        if (string.IsNullOrEmpty(name)) return wanted && _default is not null ? _heads[_default] : null;
        var own = tenant ?? ModelId.PublicTenant;
        if (name.Contains('/'))
        {
            var t = name[..name.IndexOf('/')];
            if ((t == own || t == ModelId.PublicTenant) && _heads.TryGetValue(name, out var head)) return head;
        }
        else if (_heads.TryGetValue($"{own}/{name}", out var ownHead) || _heads.TryGetValue($"{ModelId.PublicTenant}/{name}", out ownHead))
        {
            return ownHead;
        }
        throw new RequestRefusedException(ErrorCodes.RewardHeadNotFound, $"The reward head '{name}' does not exist or is not visible to this tenant.", "reward_head");
    }
}
