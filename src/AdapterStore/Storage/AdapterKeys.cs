using System.Text.RegularExpressions;

namespace Serving.AdapterStore.Storage;

/// <summary>
/// Redis key layout. Every key of a tenant carries the hash tag <c>{tenant}</c>, so the Lua commit and delete
/// scripts touch a single cluster slot.
/// </summary>
public sealed partial class AdapterKeys(string prefix)
{
    /// <summary>Pub/sub channel announcing publish and delete events.</summary>
    public string Channel => $"{prefix}:events";

    /// <summary>SET of the tenant's adapter names that have a current version.</summary>
    public string Index(string tenant) => $"{prefix}:{{{tenant}}}:idx";

    /// <summary>INCR counter handing out version numbers (never reused, even after delete).</summary>
    public string Sequence(string tenant, string name) => $"{Adapter(tenant, name)}:seq";

    /// <summary>Current version number (moved only by the commit script).</summary>
    public string Current(string tenant, string name) => $"{Adapter(tenant, name)}:cur";

    /// <summary>ZSET of published versions (score = version).</summary>
    public string Versions(string tenant, string name) => $"{Adapter(tenant, name)}:vers";

    /// <summary>HASH of one version's metadata.</summary>
    public string Meta(string tenant, string name, long version) => $"{Version(tenant, name, version)}:meta";

    /// <summary>Compressed payload chunk.</summary>
    public string Chunk(string tenant, string name, long version, int index) => $"{Version(tenant, name, version)}:c:{index}";

    /// <summary>Chunk of the original upload (kept on request).</summary>
    public string OriginalChunk(string tenant, string name, long version, int index) => $"{Version(tenant, name, version)}:o:{index}";

    private string Adapter(string tenant, string name) => $"{prefix}:{{{tenant}}}:a:{name}";

    private string Version(string tenant, string name, long version) => $"{Adapter(tenant, name)}:v:{version}";

    /// <summary>Tenant ids: lower-case letters, digits, '-', '_', 1–64 characters.</summary>
    public static bool IsValidTenant(string tenant) => TenantPattern().IsMatch(tenant);

    /// <summary>Adapter names: lower-case letters, digits, '.', '-', '_', starting with a letter or digit, 1–64 characters.</summary>
    public static bool IsValidName(string name) => NamePattern().IsMatch(name);

    [GeneratedRegex("^[a-z0-9_-]{1,64}$")]
    private static partial Regex TenantPattern();

    [GeneratedRegex("^[a-z0-9][a-z0-9._-]{0,63}$")]
    private static partial Regex NamePattern();
}
