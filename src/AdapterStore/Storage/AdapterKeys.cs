using System.Text.RegularExpressions;

namespace Serving.AdapterStore.Storage;

/// <summary>Which keys share a Redis Cluster hash slot (<see cref="AdapterStoreOptions.KeyLayout"/>).</summary>
public enum KeyLayout
{
    /// <summary>
    /// Every key of one artifact (its counter, pointer, versions, metadata and chunks) carries the hash tag
    /// <c>{tenant/name}</c>: one artifact's commit touches one slot, and a large tenant spreads over every shard.
    /// The tenant's index (<c>{tenant}</c>) lives in its own slot and is kept outside the commit. The default.
    /// </summary>
    PerAdapter,

    /// <summary>
    /// Every key of a tenant carries the hash tag <c>{tenant}</c>, as stores written before the per-adapter layout do:
    /// a tenant lands on one shard. Set it to keep reading such a store.
    /// </summary>
    PerTenant,
}

/// <summary>
/// Redis key layout of one kind of stored artifact (adapters, reward heads). One artifact's keys always share a hash
/// tag, so the Lua commit and delete scripts touch a single cluster slot; <see cref="KeyLayout"/> says whether that tag
/// is the artifact (<c>{tenant/name}</c>, the default) or the whole tenant (<c>{tenant}</c>). Kinds differ only in a
/// segment, the name of the tenant's index and the event channel.
/// </summary>
public abstract class ArtifactKeys
{
    private readonly string _prefix;
    private readonly string _segment;
    private readonly string _index;

    /// <summary>
    /// A layout under <paramref name="prefix"/>: per adapter, artifacts at <c>prefix:{T/name}:segment:…</c>; per tenant,
    /// at <c>prefix:{T}:segment:name:…</c>; the index at <c>prefix:{T}:index</c> in both.
    /// </summary>
    protected ArtifactKeys(string prefix, string segment, string index, string channel, KeyLayout layout)
    {
        _prefix = prefix;
        _segment = segment;
        _index = index;
        Channel = channel;
        Layout = layout;
    }

    /// <summary>Which keys share a slot.</summary>
    public KeyLayout Layout { get; }

    /// <summary>Pub/sub channel announcing publish and delete events of this kind.</summary>
    public string Channel { get; }

    /// <summary>SET of the tenant's names of this kind that have (or are about to have) a current version.</summary>
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

    /// <summary>SCAN pattern matching every key of one artifact (not its index entry).</summary>
    public string ArtifactPattern(string tenant, string name) => $"{Artifact(tenant, name)}:*";

    /// <summary>SCAN pattern matching every key under this prefix that belongs to <paramref name="tenant"/> (any kind, index included).</summary>
    public string TenantPattern(string tenant) => Layout == KeyLayout.PerAdapter ? $"{_prefix}:{{{tenant}[/}}]*" : $"{_prefix}:{{{tenant}}}:*";

    private string Artifact(string tenant, string name) => Layout == KeyLayout.PerAdapter
        ? $"{_prefix}:{{{tenant}/{name}}}:{_segment}"
        : $"{_prefix}:{{{tenant}}}:{_segment}:{name}";

    private string Version(string tenant, string name, long version) => $"{Artifact(tenant, name)}:v:{version}";
}

/// <summary>Key layout of adapters: <c>prefix:{T/N}:a:…</c> (or <c>prefix:{T}:a:N:…</c>), index <c>prefix:{T}:idx</c>, channel <c>prefix:events</c>.</summary>
public sealed partial class AdapterKeys(string prefix, KeyLayout layout = KeyLayout.PerAdapter) : ArtifactKeys(prefix, "a", "idx", $"{prefix}:events", layout)
{
    /// <summary>Tenant ids: lower-case letters, digits, '-', '_', 1–64 characters.</summary>
    public static bool IsValidTenant(string tenant) => TenantIdRegex().IsMatch(tenant);

    /// <summary>Adapter (and reward head) names: lower-case letters, digits, '.', '-', '_', starting with a letter or digit, 1–64 characters.</summary>
    public static bool IsValidName(string name) => NameRegex().IsMatch(name);

    [GeneratedRegex("^[a-z0-9_-]{1,64}$")]
    private static partial Regex TenantIdRegex();

    [GeneratedRegex("^[a-z0-9][a-z0-9._-]{0,63}$")]
    private static partial Regex NameRegex();
}

/// <summary>
/// Key layout of reward heads: <c>prefix:{T/N}:h:…</c> (or <c>prefix:{T}:h:N:…</c>), index <c>prefix:{T}:hidx</c>,
/// channel <c>prefix:reward-heads:events</c> (its own channel, so adapter subscribers never see head events).
/// </summary>
public sealed class RewardHeadKeys(string prefix, KeyLayout layout = KeyLayout.PerAdapter) : ArtifactKeys(prefix, "h", "hidx", $"{prefix}:reward-heads:events", layout);
