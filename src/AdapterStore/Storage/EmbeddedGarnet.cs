using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;

namespace Serving.AdapterStore.Storage;

/// <summary>
/// An in-process Garnet server on loopback, so the default setup needs no Redis and runs the same client code.
/// </summary>
/// <remarks>
/// Garnet keeps every record in one append-only log: a delete or an overwrite leaves the old bytes where they were, so
/// the log grows with everything ever written (adapter churn: every upload). Without a storage tier Garnet is a cache:
/// once the log passes its memory budget it drops the oldest records, acknowledged adapters, tenants and keys included.
/// So this server runs with a storage tier: the log's memory is bounded by the budget (<see cref="MinMemoryBytes"/> and
/// up), the records beyond it live in segment files of <see cref="SegmentBytes"/>(memory) in a folder of its own, and a
/// background compaction (Garnet's <c>Lookup</c> kind, which keeps every live record) copies the live records of the
/// oldest segments to the tail and deletes those segments, so the disk holds about the live data plus
/// <c>compactionSegments</c> segments. Nothing survives <see cref="Dispose"/>: the folder is deleted (a new server starts
/// empty, as before).
/// </remarks>
public sealed class EmbeddedGarnet : IDisposable
{
    /// <summary>Log page: an adapter chunk (1 MiB by default) is stored inline only in a page of at least twice its size; 4 MiB holds three.</summary>
    public const long PageBytes = 4L << 20;

    /// <summary>Smallest memory budget: four pages (Garnet needs a few pages to keep a mutable and a read-only region).</summary>
    public const long MinMemoryBytes = 4 * PageBytes;

    private readonly Garnet.GarnetServer _server;
    private readonly string _dataDir;

    /// <summary>
    /// Starts Garnet (Lua enabled) on <paramref name="port"/> (a free port when 0) with a log of <paramref name="memory"/>
    /// in memory (a size as Garnet reads it: <c>32m</c>, <c>1g</c>; at least <see cref="MinMemoryBytes"/>) and the rest
    /// in a new folder under <paramref name="dataDirectory"/> (the system temp folder when null); compaction every
    /// <paramref name="compactionInterval"/> (default 60 s, whole seconds) once the log holds more than
    /// <paramref name="compactionSegments"/> segments.
    /// </summary>
    public EmbeddedGarnet(int port = 0, string memory = DefaultMemory, ILoggerFactory? loggerFactory = null, string? dataDirectory = null,
        TimeSpan? compactionInterval = null, int compactionSegments = DefaultCompactionSegments)
    {
        long memoryBytes = ParseSize(memory) ?? throw new ArgumentException($"'{memory}' is not a size such as 32m or 1g.", nameof(memory));
        if (memoryBytes < MinMemoryBytes) throw new ArgumentException($"The embedded store needs at least {MinMemoryBytes >> 20}m of memory, not '{memory}'.", nameof(memory));
        var interval = compactionInterval ?? TimeSpan.FromSeconds(60);
        if (interval < TimeSpan.FromSeconds(1) || interval.Ticks % TimeSpan.TicksPerSecond != 0) throw new ArgumentOutOfRangeException(nameof(compactionInterval), "whole seconds, at least 1");
        if (compactionSegments < 2) throw new ArgumentOutOfRangeException(nameof(compactionSegments), "at least 2");
        Port = port == 0 ? FreePort() : port;
        // Garnet's data folders default to the working directory, and Dispose(true) deletes them: give it its own folder.
        _dataDir = dataDirectory is null
            ? Directory.CreateTempSubdirectory("garnet-").FullName
            : Directory.CreateDirectory(Path.Combine(dataDirectory, "garnet-" + Guid.NewGuid().ToString("N")[..12])).FullName;
        var inv = CultureInfo.InvariantCulture;
        string[] args =
        [
            "--checkpointdir", _dataDir,
            "--bind", "127.0.0.1", "--port", Port.ToString(inv), "-q",
            "--logger-level", "Warning", "--lua", "--index", "1m",
            "--memory", memoryBytes.ToString(inv), "--page", PageBytes.ToString(inv), "--segment", SegmentBytes(memoryBytes).ToString(inv),
            // The default device needs libaio; RandomAccess is .NET's own positional file I/O.
            "--storage-tier", "--logdir", _dataDir, "--device-type", "RandomAccess",
            "--compaction-type", "Lookup", "--compaction-freq", ((long)interval.TotalSeconds).ToString(inv),
            "--compaction-max-segments", compactionSegments.ToString(inv), "--compaction-force-delete",
        ];
        _server = new Garnet.GarnetServer(args, loggerFactory);
        _server.Start();
    }

    /// <summary>
    /// Default memory budget of the log (records beyond it are read from the data folder): the minimum, four pages. Pages
    /// are allocated as the log's tail first reaches them and then reused, so a larger budget makes the process grow
    /// under churn until the budget is full; the store's readers (the node's adapter loads, the gateway's lookups) cache
    /// what they read, so a small log in memory costs little.
    /// </summary>
    public const string DefaultMemory = "16m";

    /// <summary>Default number of log segments on disk before compaction starts.</summary>
    public const int DefaultCompactionSegments = 8;

    /// <summary>Loopback port it listens on.</summary>
    public int Port { get; }

    /// <summary>The folder of the log's segment files (deleted on dispose).</summary>
    public string DataDirectory => _dataDir;

    /// <summary>
    /// StackExchange.Redis connection string for this server. The server runs in this process, so a late reply means a
    /// starved process (a loaded machine: Garnet compiles the first Lua script it sees), not a lost server: commands wait
    /// up to 20 s instead of the client's 5 s default before they count as failed.
    /// </summary>
    public string ConnectionString => $"127.0.0.1:{Port},syncTimeout=20000,asyncTimeout=20000";

    /// <summary>Starts the server that <paramref name="o"/> describes (its <c>Embedded*</c> settings).</summary>
    public static EmbeddedGarnet Start(AdapterStoreOptions o, ILoggerFactory? loggerFactory = null) =>
        new(o.EmbeddedPort, o.EmbeddedMemory, loggerFactory, o.EmbeddedDataDirectory, o.EmbeddedCompactionInterval, o.EmbeddedCompactionSegments);

    /// <summary>Segment size for a memory budget: half of it, rounded down to a power of two, at least one page.</summary>
    public static long SegmentBytes(long memoryBytes) => Math.Max(PageBytes, 1L << System.Numerics.BitOperations.Log2((ulong)(memoryBytes / 2)));

    /// <summary>Bytes of a size written as Garnet reads it (digits, then an optional k, m, g or t, any case); null when malformed.</summary>
    public static long? ParseSize(string? text)
    {
        if (string.IsNullOrWhiteSpace(text)) return null;
        var s = text.Trim();
        int shift = char.ToLowerInvariant(s[^1]) switch { 'k' => 10, 'm' => 20, 'g' => 30, 't' => 40, _ => 0 };
        if (shift != 0) s = s[..^1];
        if (s.Length == 0 || s.Length > 12 || !s.All(char.IsAsciiDigit)) return null;
        return long.Parse(s, CultureInfo.InvariantCulture) << shift;
    }

    /// <summary>A free loopback TCP port (bound and released; a race with another process is possible but rare).</summary>
    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _server.Dispose(false);
        try
        {
            Directory.Delete(_dataDir, recursive: true);
        }
        catch (IOException)
        {
            // A leftover temp folder is harmless.
        }
    }
}
