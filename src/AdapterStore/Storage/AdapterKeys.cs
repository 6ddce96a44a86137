using System.Text.RegularExpressions;

namespace Serving.AdapterStore.Storage;

/// <summary>
/// Redis key layout of one kind of stored artifact (adapters, reward heads). Every key of a tenant carries the hash
/// tag <c>{tenant}</c>, so the Lua commit and delete scripts touch a single cluster slot. Kinds differ only in the
/// segment after the tenant, the name of the tenant's index and the event channel.
/// </summary>
public abstract class ArtifactKeys
{
    private readonly string _prefix;
    private readonly string _segment;
    private readonly string _index;

    /// <summary>A layout under <paramref name="prefix"/>: artifacts at <c>prefix:{T}:segment:name</c>, the index at <c>prefix:{T}:index</c>.</summary>
    protected ArtifactKeys(string prefix, string segment, string index, string channel)
    {
        _prefix = prefix;
        _segment = segment;
        _index = index;
        Channel = channel;
    }

    /// <summary>Pub/sub channel announcing publish and delete events of this kind.</summary>
    public string Channel { get; }

    /// <summary>SET of the tenant's names of this kind that have a current version.</summary>
    public string Index(string tenant) => $"{_prefix}:{{{tenant}}}:{_index}";

    /// <summary>INCR counter handing out version numbers (never reused, even after delete).</summary>
    public string Sequence(string tenant, string name) => $"{Artifact(tenant, name)}:seq";

    /// <summary>Current version number (moved only by the commit script).</summary>
    public string Current(string tenant, string name) => $"{Artifact(tenant, name)}:cur";

    /// <summary>ZSET of published versions (score = version).</summary>
    public string Versions(string tenant, string name) => $"{Artifact(tenant, name)}:vers";

    /// <summary>HASH of one version's metadata.</summary>
    public string Meta(string tenant, string name, long version) => $"{Version(tenant, name, version)}:meta";

    /// <summary>Payload chunk.</summary>
    public string Chunk(string tenant, string name, long version, int index) => $"{Version(tenant, name, version)}:c:{index}";

    /// <summary>Chunk of the original upload (kept on request).</summary>
    public string OriginalChunk(string tenant, string name, long version, int index) => $"{Version(tenant, name, version)}:o:{index}";

    private string Artifact(string tenant, string name) => $"{_prefix}:{{{tenant}}}:{_segment}:{name}";

    private string Version(string tenant, string name, long version) => $"{Artifact(tenant, name)}:v:{version}";
}

/// <summary>Key layout of adapters: <c>prefix:{T}:a:name…</c>, index <c>prefix:{T}:idx</c>, channel <c>prefix:events</c>.</summary>
public sealed partial class AdapterKeys(string prefix) : ArtifactKeys(prefix, "a", "idx", $"{prefix}:events")
{
    /// <summary>Tenant ids: lower-case letters, digits, '-', '_', 1–64 characters.</summary>
    public static bool IsValidTenant(string tenant) => TenantPattern().IsMatch(tenant);

    /// <summary>Adapter (and reward head) names: lower-case letters, digits, '.', '-', '_', starting with a letter or digit, 1–64 characters.</summary>
    public static bool IsValidName(string name) => NamePattern().IsMatch(name);

    [GeneratedRegex("^[a-z0-9_-]{1,64}$")]
    private static partial Regex TenantPattern();

    [GeneratedRegex("^[a-z0-9][a-z0-9._-]{0,63}$")]
    private static partial Regex NamePattern();
}

/// <summary>
/// Key layout of reward heads: <c>prefix:{T}:h:name…</c>, index <c>prefix:{T}:hidx</c>, channel
/// <c>prefix:reward-heads:events</c> (its own channel, so adapter subscribers never see head events).
/// </summary>
public sealed class RewardHeadKeys(string prefix) : ArtifactKeys(prefix, "h", "hidx", $"{prefix}:reward-heads:events");
