using System.Diagnostics;
using Serving.AdapterStore.Storage;
using StackExchange.Redis;

namespace Serving.AdapterStore.Tests.Storage;

/// <summary>A Redis-protocol server for tests.</summary>
public interface IStoreServer
{
    /// <summary>Connection string.</summary>
    string ConnectionString { get; }
}

/// <summary>A real redis-server process on a free loopback port, stopped by its pid on dispose.</summary>
public sealed class RedisServerProcess : IStoreServer, IDisposable
{
    private Process _process;
    private readonly string[] _extraArgs;

    public RedisServerProcess(params string[] extraArgs)
    {
        _extraArgs = extraArgs;
        Port = EmbeddedGarnet.FreePort();
        _process = Launch();
    }

    public int Port { get; }

    public string ConnectionString => $"127.0.0.1:{Port},abortConnect=false,connectTimeout=2000,syncTimeout=5000";

    private Process Launch()
    {
        var psi = new ProcessStartInfo("redis-server") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "--port", Port.ToString(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no" }.Concat(_extraArgs)) psi.ArgumentList.Add(a);
        var p = Process.Start(psi) ?? throw new InvalidOperationException("redis-server did not start (apt-get install redis-server).");
        p.OutputDataReceived += (_, _) => { };
        p.ErrorDataReceived += (_, _) => { };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        WaitReady();
        return p;
    }

    private void WaitReady()
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (true)
        {
            try
            {
                using var c = ConnectionMultiplexer.Connect($"127.0.0.1:{Port},connectTimeout=500");
                c.GetDatabase().Ping();
                return;
            }
            catch (RedisConnectionException) when (DateTime.UtcNow < deadline)
            {
                Thread.Yield();
            }
        }
    }

    /// <summary>SIGKILL, as a crash would.</summary>
    public void Kill()
    {
        _process.Kill();
        _process.WaitForExit();
    }

    /// <summary>Starts again on the same port with the same arguments.</summary>
    public void Restart() => _process = Launch();

    public void Dispose()
    {
        if (!_process.HasExited) Kill();
        _process.Dispose();
    }
}

/// <summary>xunit fixture: one redis-server per test class.</summary>
public sealed class RedisFixture : IStoreServer, IDisposable
{
    private readonly RedisServerProcess _server = new();
    public string ConnectionString => _server.ConnectionString;
    public void Dispose() => _server.Dispose();
}

/// <summary>xunit fixture: one embedded Garnet per test class.</summary>
public sealed class GarnetFixture : IStoreServer, IDisposable
{
    private readonly EmbeddedGarnet _server = new(memory: "256m");
    public string ConnectionString => _server.ConnectionString;
    public void Dispose() => _server.Dispose();
}
