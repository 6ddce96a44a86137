namespace Serving.AdapterStore.Storage;

/// <summary>Where and how adapters are stored; bound from the <c>AdapterStore</c> configuration section.</summary>
public sealed record AdapterStoreOptions
{
    /// <summary>Configuration section name.</summary>
    public const string SectionName = "AdapterStore";

    /// <summary>StackExchange.Redis connection string; when empty an embedded Garnet server is started on loopback.</summary>
    public string? RedisConnectionString { get; init; }

    /// <summary>Prefix of every key and of the event channel.</summary>
    public string KeyPrefix { get; init; } = "adp";

    /// <summary>Payload chunk size: well under Redis' 512 MB value limit and small enough not to stall the server.</summary>
    public int ChunkBytes { get; init; } = 1 << 20;

    /// <summary>Published versions kept per adapter; older ones are deleted after each publish (the current one never is).</summary>
    public int KeepVersions { get; init; } = 5;

    /// <summary>Chunks of an unfinished upload expire after this, so a crashed writer leaves nothing behind for long.</summary>
    public TimeSpan StagingTtl { get; init; } = TimeSpan.FromHours(1);

    /// <summary>Read chunks back and compare hashes before the version becomes visible.</summary>
    public bool VerifyAfterWrite { get; init; } = true;

    /// <summary>Embedded Garnet's memory bound (its <c>--memory</c>).</summary>
    public string EmbeddedMemory { get; init; } = "512m";

    /// <summary>Embedded Garnet port; 0 picks a free loopback port.</summary>
    public int EmbeddedPort { get; init; }

    /// <summary>Throws when a value is out of range.</summary>
    public void Validate()
    {
        if (ChunkBytes < 1024 || ChunkBytes > 64 << 20) throw new ArgumentOutOfRangeException(nameof(ChunkBytes), ChunkBytes, "chunk size must be between 1 KiB and 64 MiB");
        if (KeepVersions < 1) throw new ArgumentOutOfRangeException(nameof(KeepVersions), KeepVersions, "keep at least one version");
        if (string.IsNullOrWhiteSpace(KeyPrefix) || KeyPrefix.Contains('{') || KeyPrefix.Contains('}')) throw new ArgumentException("key prefix must be non-empty and without braces", nameof(KeyPrefix));
        if (StagingTtl <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(StagingTtl), StagingTtl, "staging TTL must be positive");
    }
}
