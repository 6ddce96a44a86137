using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Serving.Stress.Sampling;

/// <summary>The embedded Garnet's log at one moment (its <c>INFO store</c>) and the size of its files.</summary>
/// <param name="TailBytes">Log tail address: every byte ever appended (deletes and overwrites append too).</param>
/// <param name="BeginBytes">Log begin address: where compaction has cut the log (64 until it first runs).</param>
/// <param name="MemoryBytes">Log pages allocated in memory (bounded by the store's memory budget).</param>
/// <param name="FileBytes">Bytes of the store's files on disk; null when the folder is unknown.</param>
internal sealed record StoreSample(long TailBytes, long BeginBytes, long MemoryBytes, long? FileBytes);

/// <summary>Reads the embedded Garnet's <c>INFO store</c> over a plain RESP connection on loopback.</summary>
internal static class StoreProbe
{
    /// <summary>The numeric <c>Log.*</c> fields of an <c>INFO store</c> text.</summary>
    public static Dictionary<string, long> ParseInfo(string text)
    {
        var fields = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var line in text.Split('\n'))
        {
            var parts = line.Trim().Split(':', 2);
            if (parts.Length == 2 && parts[0].StartsWith("Log.", StringComparison.Ordinal)
                && long.TryParse(parts[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out long v)) fields[parts[0]] = v;
        }
        return fields;
    }

    /// <summary>One sample; null when the store does not answer (e.g. a host build that ignores the port setting).</summary>
    public static async Task<StoreSample?> SampleAsync(int port, string? dataDirectory, CancellationToken ct)
    {
        string text;
        try
        {
            using var tcp = new TcpClient();
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(TimeSpan.FromSeconds(5));
            await tcp.ConnectAsync(IPAddress.Loopback, port, timeout.Token);
            var stream = tcp.GetStream();
            await stream.WriteAsync("*2\r\n$4\r\nINFO\r\n$5\r\nstore\r\n"u8.ToArray(), timeout.Token);
            text = await ReadBulkStringAsync(stream, timeout.Token);
        }
        catch (Exception e) when (e is SocketException or IOException or OperationCanceledException or FormatException)
        {
            return null;
        }
        var f = ParseInfo(text);
        if (!f.TryGetValue("Log.TailAddress", out long tail) || !f.TryGetValue("Log.BeginAddress", out long begin)) return null;
        long? files = dataDirectory is not null && Directory.Exists(dataDirectory)
            ? Directory.EnumerateFiles(dataDirectory, "*", SearchOption.AllDirectories).Sum(p => new FileInfo(p).Length)
            : null;
        return new StoreSample(tail, begin, f.GetValueOrDefault("Log.CurrentMemorySizeBytes") + f.GetValueOrDefault("Log.CurrentHeapSizeBytes"), files);
    }

    /// <summary>Reads a RESP bulk string (<c>$len\r\n…\r\n</c>).</summary>
    internal static async Task<string> ReadBulkStringAsync(Stream stream, CancellationToken ct)
    {
        var header = new StringBuilder();
        var one = new byte[1];
        while (true)
        {
            if (await stream.ReadAsync(one, ct) == 0) throw new IOException("connection closed");
            if (one[0] == '\n') break;
            if (one[0] != '\r') header.Append((char)one[0]);
        }
        if (header.Length < 2 || header[0] != '$' || !int.TryParse(header.ToString(1, header.Length - 1), NumberStyles.Integer, CultureInfo.InvariantCulture, out int length) || length < 0)
            throw new FormatException($"not a bulk string: {header}");
        var body = new byte[length];
        await stream.ReadExactlyAsync(body, ct);
        return Encoding.UTF8.GetString(body);
    }

    /// <summary>A free loopback TCP port.</summary>
    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }
}
