using Microsoft.Extensions.Options;

namespace Serving.AdapterStore.Storage;

/// <summary>Where and how adapters are stored; bound from the <c>AdapterStore</c> configuration section.</summary>
public sealed class AdapterStoreOptions
{
    /// <summary>Configuration section name.</summary>
    public const string SectionName = "AdapterStore";

    /// <summary>The default of <see cref="KeyPrefix"/> (a node reading the store uses the same one).</summary>
    public const string DefaultKeyPrefix = "adp";

    /// <summary>StackExchange.Redis connection string; when empty an embedded Garnet server is started on loopback.</summary>
    public string? RedisConnectionString { get; set; }

    /// <summary>Prefix of every key and of the event channel; non-empty, no braces; default <see cref="DefaultKeyPrefix"/>.</summary>
    public string KeyPrefix { get; set; } = DefaultKeyPrefix;

    /// <summary>
    /// Which keys share a Redis Cluster slot: <see cref="KeyLayout.PerAdapter"/> (the default: one artifact per slot, a
    /// large tenant spreads over the shards) or <see cref="KeyLayout.PerTenant"/> (stores written before it). Every
    /// service reading the store uses the same layout (the node's <c>Node:AdapterKeyLayout</c>).
    /// </summary>
    public KeyLayout KeyLayout { get; set; } = KeyLayout.PerAdapter;

    /// <summary>
    /// Replicas that must confirm a commit before a publish returns (Redis <c>WAIT</c> on the artifact's primary); 0 (the
    /// default) does not wait. With 1 on a Redis Cluster (or a primary with replicas), an acknowledged upload survives a
    /// failover of its primary: Redis replicates asynchronously, and without the wait a primary that dies right after a
    /// commit can take it along. A commit the replicas do not confirm in <see cref="WaitReplicasTimeout"/> fails the publish
    /// with <see cref="StoreUnavailableException"/> (it may be visible, and may be lost; retrying makes a new version).
    /// </summary>
    public int WaitReplicas { get; set; }

    /// <summary>How long a publish waits for <see cref="WaitReplicas"/> confirmations; 1 ms–30 s, default 2 s.</summary>
    public TimeSpan WaitReplicasTimeout { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Payload chunk size: well under Redis' 512 MB value limit and small enough not to stall the server; 1 KiB–64 MiB, default 1 MiB.</summary>
    public int ChunkBytes { get; set; } = 1 << 20;

    /// <summary>Published versions kept per adapter; older ones are deleted after each publish (the current one never is); at least 1, default 5.</summary>
    public int KeepVersions { get; set; } = 5;

    /// <summary>Chunks of an unfinished upload expire after this, so a crashed writer leaves nothing behind for long; default 1 h.</summary>
    public TimeSpan StagingTtl { get; set; } = TimeSpan.FromHours(1);

    /// <summary>Read chunks back and compare hashes before the version becomes visible; default true.</summary>
    public bool VerifyAfterWrite { get; set; } = true;

    /// <summary>
    /// Embedded Garnet's log memory (its <c>--memory</c>; at least <c>16m</c>); default <c>16m</c>. Records beyond it are
    /// kept in <see cref="EmbeddedDataDirectory"/> and read from there, never dropped (see <see cref="EmbeddedGarnet"/>).
    /// </summary>
    public string EmbeddedMemory { get; set; } = EmbeddedGarnet.DefaultMemory;

    /// <summary>
    /// Folder under which embedded Garnet keeps its log files (a new subfolder per start, deleted at stop: nothing
    /// survives a restart); default the system temp folder. On a tmpfs those files take memory, outside the process.
    /// </summary>
    public string? EmbeddedDataDirectory { get; set; }

    /// <summary>How often embedded Garnet compacts its log (whole seconds, 1 s–1 h); default 60 s.</summary>
    public TimeSpan EmbeddedCompactionInterval { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>Log segments (each half of <see cref="EmbeddedMemory"/>) on disk before a compaction starts; 2–1024, default 8.</summary>
    public int EmbeddedCompactionSegments { get; set; } = EmbeddedGarnet.DefaultCompactionSegments;

    /// <summary>Embedded Garnet port; 0 (the default) picks a free loopback port.</summary>
    public int EmbeddedPort { get; set; }
}

/// <summary>Checks <see cref="AdapterStoreOptions"/>: at start when bound from configuration, and when a store is built from code.</summary>
public sealed class AdapterStoreOptionsValidator : IValidateOptions<AdapterStoreOptions>
{
    /// <inheritdoc />
    public ValidateOptionsResult Validate(string? name, AdapterStoreOptions o)
    {
        var errors = new List<string>();
        const string S = AdapterStoreOptions.SectionName;
        if (o.ChunkBytes is < 1024 or > 64 << 20) errors.Add($"{S}:ChunkBytes must be between 1 KiB and 64 MiB.");
        if (o.KeepVersions < 1) errors.Add($"{S}:KeepVersions must be at least 1.");
        if (string.IsNullOrWhiteSpace(o.KeyPrefix) || o.KeyPrefix.Contains('{') || o.KeyPrefix.Contains('}')) errors.Add($"{S}:KeyPrefix must be non-empty and without braces.");
        if (o.StagingTtl <= TimeSpan.Zero) errors.Add($"{S}:StagingTtl must be positive.");
        if (!Enum.IsDefined(o.KeyLayout)) errors.Add($"{S}:KeyLayout must be PerAdapter or PerTenant.");
        if (o.WaitReplicas is < 0 or > 16) errors.Add($"{S}:WaitReplicas must be between 0 and 16.");
        if (o.WaitReplicasTimeout < TimeSpan.FromMilliseconds(1) || o.WaitReplicasTimeout > TimeSpan.FromSeconds(30)) errors.Add($"{S}:WaitReplicasTimeout must be between 1 ms and 30 s.");
        if (o.EmbeddedPort is < 0 or > 65535) errors.Add($"{S}:EmbeddedPort must be in [0, 65535].");
        if (EmbeddedGarnet.ParseSize(o.EmbeddedMemory) is not { } memory || memory < EmbeddedGarnet.MinMemoryBytes)
            errors.Add($"{S}:EmbeddedMemory must be a size of at least 16m, such as 32m or 1g.");
        if (o.EmbeddedCompactionInterval < TimeSpan.FromSeconds(1) || o.EmbeddedCompactionInterval > TimeSpan.FromHours(1) || o.EmbeddedCompactionInterval.Ticks % TimeSpan.TicksPerSecond != 0)
            errors.Add($"{S}:EmbeddedCompactionInterval must be whole seconds between 1 s and 1 h.");
        if (o.EmbeddedCompactionSegments is < 2 or > 1024) errors.Add($"{S}:EmbeddedCompactionSegments must be between 2 and 1024.");
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    /// <summary>Throws <see cref="OptionsValidationException"/> when <paramref name="options"/> (built by code) is invalid.</summary>
    public static AdapterStoreOptions Check(AdapterStoreOptions options)
    {
        var result = new AdapterStoreOptionsValidator().Validate(null, options);
        return result.Failed ? throw new OptionsValidationException(Options.DefaultName, typeof(AdapterStoreOptions), result.Failures) : options;
    }
}
