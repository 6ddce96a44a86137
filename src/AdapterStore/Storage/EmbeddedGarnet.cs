using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;

namespace Serving.AdapterStore.Storage;

/// <summary>An in-process Garnet server on loopback, so the default setup needs no Redis and runs the same client code.</summary>
public sealed class EmbeddedGarnet : IDisposable
{
    private readonly Garnet.GarnetServer _server;
    private readonly string _dataDir;

    /// <summary>Starts Garnet (Lua enabled, memory bounded, no persistence) on <paramref name="port"/> or a free port when 0.</summary>
    public EmbeddedGarnet(int port = 0, string memory = "512m", ILoggerFactory? loggerFactory = null)
    {
        Port = port == 0 ? FreePort() : port;
        // Garnet's data folders default to the working directory, and Dispose(true) deletes them: give it its own folder.
        _dataDir = Directory.CreateTempSubdirectory("garnet-").FullName;
        string[] args =
        [
            "--checkpointdir", _dataDir,
            "--bind", "127.0.0.1", "--port", Port.ToString(System.Globalization.CultureInfo.InvariantCulture), "-q",
            "--logger-level", "Warning", "--lua", "--index", "1m", "--memory", memory,
        ];
        _server = new Garnet.GarnetServer(args, loggerFactory);
        _server.Start();
    }

    /// <summary>Loopback port it listens on.</summary>
    public int Port { get; }

    /// <summary>
    /// StackExchange.Redis connection string for this server. The server runs in this process, so a late reply means a
    /// starved process (a loaded machine: Garnet compiles the first Lua script it sees), not a lost server: commands wait
    /// up to 20 s instead of the client's 5 s default before they count as failed.
    /// </summary>
    public string ConnectionString => $"127.0.0.1:{Port},syncTimeout=20000,asyncTimeout=20000";

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
