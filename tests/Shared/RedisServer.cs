using System.Diagnostics;
using System.Globalization;
using Serving.AdapterStore.Storage;
using StackExchange.Redis;

namespace Serving.Tests.Shared;

/// <summary>A real redis-server on a free loopback port (no persistence), killed by its pid. Linked into the test projects that need one.</summary>
public sealed class RedisServer : IDisposable
{
    private Process _process;

    public RedisServer()
    {
        Port = EmbeddedGarnet.FreePort();
        _process = Launch();
    }

    public int Port { get; }

    /// <summary>Connection string that survives a restart (no abort on connect failure, short timeouts).</summary>
    public string ConnectionString => $"127.0.0.1:{Port},abortConnect=false,connectTimeout=1000,syncTimeout=2000,asyncTimeout=2000,connectRetry=1";

    private Process Launch()
    {
        var psi = new ProcessStartInfo("redis-server") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "--port", Port.ToString(CultureInfo.InvariantCulture), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no" }) psi.ArgumentList.Add(a);
        var p = Process.Start(psi) ?? throw new InvalidOperationException("redis-server did not start (apt-get install -y redis-server).");
        p.OutputDataReceived += (_, _) => { };
        p.ErrorDataReceived += (_, _) => { };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (true)
        {
            try
            {
                using var c = ConnectionMultiplexer.Connect($"127.0.0.1:{Port},connectTimeout=500");
                c.GetDatabase().Ping();
                return p;
            }
            catch (RedisConnectionException) when (DateTime.UtcNow < deadline)
            {
                Thread.Sleep(20);
            }
        }
    }

    /// <summary>SIGKILL, as a crash would.</summary>
    public void Kill()
    {
        if (_process.HasExited) return;
        _process.Kill();
        _process.WaitForExit();
    }

    /// <summary>Starts again on the same port (empty: no persistence).</summary>
    public void Restart()
    {
        _process.Dispose();
        _process = Launch();
    }

    public void Dispose()
    {
        Kill();
        _process.Dispose();
    }
}
